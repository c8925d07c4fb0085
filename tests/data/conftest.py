"""A local HTTP server for download tests: good images and every way a catalog URL fails."""

from __future__ import annotations

import functools
import gzip
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image


def jpeg(seed: int, size: int = 48) -> bytes:
    image = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@functools.cache
def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buffer, format="PNG")  # 90 M pixels, ~12 kB
    return buffer.getvalue()


class CatalogServer:
    """Routes (GET):

    /good/N.jpg          a JPEG, distinct per N        /missing        404
    /flaky/N.jpg         500 on the first request, then the JPEG
    /slow.jpg            waits `slow_s` before answering
    /cut.jpg             announces more bytes than it sends, then closes
    /truncated.jpg       a JPEG cut in half (complete response)
    /page.html           HTML instead of an image    /bomb.png   a decompression bomb
    /big.bin, /big-chunked.bin   a body over any small cap (with / without Content-Length)
    /gzip-bomb.jpg       5 MB that arrive as ~5 kB with Content-Encoding: gzip
    /to/<path>           302 to /<path> on the same host
    /to-localhost/<path> 302 to http://localhost:PORT/<path> (another name, same box)
    /to-metadata         302 to http://169.254.169.254/latest/meta-data/ (cloud metadata)
    /to-internal         302 to http://10.255.255.1/x.jpg
    /retry-after/S/N.jpg 503 with `Retry-After: S` on the first request, then the JPEG
    Every response waits `latency_s` first; `hits` counts requests per path, `times` holds
    their arrival times and `hosts` the Host header of every request.
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.hosts: list[str | None] = []
        self.lock = threading.Lock()
        self.latency_s = 0.0
        self.slow_s = 2.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.times.setdefault(self.path, []).append(time.monotonic())
                    server.hosts.append(self.headers.get("Host"))
                    server.hits[self.path] += 1
                    count = server.hits[self.path]
                if server.latency_s:
                    time.sleep(server.latency_s)
                server.route(self, count)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, handler: BaseHTTPRequestHandler, count: int) -> None:
        path = handler.path
        if path.startswith("/good/"):
            return self.send(handler, 200, jpeg(int(path.split("/")[2].split(".")[0])))
        if path.startswith("/flaky/"):
            if count == 1:
                return self.send(handler, 500, b"try again")
            return self.send(handler, 200, jpeg(1000 + int(path.split("/")[2].split(".")[0])))
        if path.startswith("/retry-after/"):
            _, _, seconds, name = path.split("/")
            if count == 1:
                handler.send_response(503)
                handler.send_header("Retry-After", seconds)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return None
            return self.send(handler, 200, jpeg(2000 + int(name.split(".")[0])))
        if path == "/slow.jpg":
            time.sleep(self.slow_s)
            return self.send(handler, 200, jpeg(7))
        if path == "/cut.jpg":
            data = jpeg(8)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 3])
            handler.wfile.flush()
            handler.close_connection = True
            return None
        if path == "/truncated.jpg":
            return self.send(handler, 200, jpeg(9)[:300])
        if path == "/page.html":
            return self.send(handler, 200, b"<html><body>Sold out</body></html>", "text/html")
        if path == "/bomb.png":
            return self.send(handler, 200, bomb_png(), "image/png")
        if path == "/gzip-bomb.jpg":  # 5 MB of zeros in ~5 kB on the wire
            body = gzip.compress(b"\0" * 5_000_000)
            handler.send_response(200)
            handler.send_header("Content-Encoding", "gzip")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return None
        if path == "/big.bin":
            return self.send(handler, 200, b"\0" * 300_000)
        if path == "/big-chunked.bin":
            handler.send_response(200)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for _ in range(30):
                block = b"\0" * 10_000
                handler.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
            return None
        if path.startswith("/to/"):
            return self.redirect(handler, path[3:])
        if path.startswith("/to-localhost/"):
            return self.redirect(handler, f"http://localhost:{self.port}{path[13:]}")
        if path == "/to-metadata":
            return self.redirect(handler, "http://169.254.169.254/latest/meta-data/")
        if path == "/to-internal":
            return self.redirect(handler, "http://10.255.255.1/x.jpg")
        return self.send(handler, 404, b"not found")

    @staticmethod
    def send(handler, status: int, body: bytes, kind: str = "image/jpeg") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def redirect(handler, location: str) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


@pytest.fixture
def server() -> Iterator[CatalogServer]:
    bomb_png()  # built once per process, before any request can time out waiting for it
    catalog = CatalogServer()
    catalog.thread.start()
    try:
        yield catalog
    finally:
        catalog.httpd.shutdown()
        catalog.httpd.server_close()
