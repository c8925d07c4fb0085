"""The SSRF guard connects where it checked: one resolution per connection, every address
checked (embedded IPv4 forms too), Host kept; and Retry-After is honoured, capped."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import pytest

from vistune.data import schema
from vistune.data.download import (
    DownloadOptions,
    FetchError,
    KeepAliveCheckedStream,
    fetch_bytes,
    is_public_address,
    make_client,
    parse_retry_after,
)

FAST = {"timeout_s": 2.0, "retries": 0, "backoff_s": 0.01, "max_bytes": 100_000}
PUBLIC = "93.184.216.34"


def fetch(url: str, **options) -> bytes:
    opts = DownloadOptions(**{**FAST, **options})

    async def run() -> bytes:
        async with make_client(opts) as client:
            return await fetch_bytes(client, url, opts)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 around 10.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 around 169.254.169.254
        ("2002:808:808::1", True),  # 6to4 around 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("64:ff9b::7f00:1", False),  # NAT64 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 around the metadata address
        ("64:ff9b::808:808", True),  # NAT64 around 8.8.8.8
        ("64:ff9b:1::808:808", False),  # NAT64 local-use prefix: never global
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::ffff:7f00:1", False),  # IPv4-mapped, hex form
        ("::1", False),
        ("::", False),
    ],
)
def test_embedded_ipv4_forms(address: str, public: bool) -> None:
    assert is_public_address(address) is public


class FakeResolver:
    """Answers from a script, one answer per lookup, and counts lookups (DNS rebinding)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record where connections go; connections to PUBLIC fail (no network in tests)."""
    seen: list[str] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def recording(self, host, port, *args, **kwargs):
        seen.append(host)
        if host == PUBLIC:
            raise httpcore.ConnectError("unreachable in tests")
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", recording)
    return seen


def test_rebinding_resolver_cannot_move_the_connection_to_loopback(server, connects) -> None:
    """Public on the first lookup, loopback afterwards: the connection goes to the address
    that was checked (public, unreachable here) and never to 127.0.0.1."""
    resolver = FakeResolver([PUBLIC], ["127.0.0.1"])
    for attempt in range(3):
        with pytest.raises(FetchError) as caught:
            fetch(f"http://rebind.test:{server.port}/good/{attempt}.jpg", resolver=resolver)
        if caught.value.reason == schema.REFUSED_URL:
            assert "127.0.0.1" in caught.value.detail
    assert "127.0.0.1" not in connects
    assert server.hits == {}  # the local server was never reached
    assert len(resolver.lookups) == 3  # one lookup per connection, no cached verdict


def test_every_resolved_address_is_checked(server, connects) -> None:
    resolver = FakeResolver([PUBLIC, "10.0.0.5"])
    with pytest.raises(FetchError) as caught:
        fetch(f"http://mixed.test:{server.port}/good/1.jpg", resolver=resolver)
    assert caught.value.reason == schema.REFUSED_URL
    assert "10.0.0.5" in caught.value.detail
    assert connects == []  # refused before any connection


def test_pinned_connection_keeps_the_host_name(server, connects) -> None:
    """A trusted name resolved by the fake resolver: bytes go to the pinned IP, the Host
    header still carries the name (as TLS SNI would)."""
    resolver = FakeResolver(["127.0.0.1"])
    data = fetch(
        f"http://images.example:{server.port}/good/3.jpg",
        resolver=resolver,
        allowed_hosts=frozenset({"images.example"}),
    )
    assert data[:2] == b"\xff\xd8"
    assert connects == ["127.0.0.1"]
    assert server.hosts == [f"images.example:{server.port}"]


def test_retry_after_is_honoured(server) -> None:
    data = fetch(
        server.url("/retry-after/1/1.jpg"), retries=1, allowed_hosts=frozenset({"127.0.0.1"})
    )
    assert data[:2] == b"\xff\xd8"
    first, second = server.times["/retry-after/1/1.jpg"]
    assert second - first >= 0.9  # jittered backoff alone would retry within 0.01 s


def test_retry_after_is_capped(server) -> None:
    started = time.monotonic()
    fetch(
        server.url("/retry-after/3600/2.jpg"),
        retries=1,
        max_retry_after_s=0.05,
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    assert time.monotonic() - started < 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_to_a_pinned_address_keeps_sni_and_certificate_checks(tmp_path) -> None:
    """TLS to the pinned 127.0.0.1: SNI and the certificate check use the URL's name."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", "/CN=images.example",
         "-addext", "subjectAltName=DNS:images.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"\xff\xd8tls-body"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        options = DownloadOptions(
            **FAST,
            resolver=FakeResolver(["127.0.0.1"]),
            allowed_hosts=frozenset({"images.example"}),
        )
        trusted = ssl.create_default_context(cafile=str(cert))

        async def run(url: str, opts: DownloadOptions = options) -> bytes:
            async with make_client(opts, ssl_context=trusted) as client:
                return await fetch_bytes(client, url, opts)

        port = httpd.server_address[1]
        assert asyncio.run(run(f"https://images.example:{port}/a.jpg")) == b"\xff\xd8tls-body"
        assert names == ["images.example"]  # SNI carried the name, not the pinned IP
        anywhere = DownloadOptions(**FAST, allow_private_hosts=True)
        with pytest.raises(FetchError) as caught:  # the certificate is checked against the name
            asyncio.run(run(f"https://127.0.0.1:{port}/a.jpg", anywhere))
        assert caught.value.reason == schema.DOWNLOAD_FAILED
        assert "certificate" in caught.value.detail.lower()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_pinned_connections_are_kept_alive_and_reused(server, connects) -> None:
    """Sequential fetches through one pinned client share one connection (keep-alive is
    not defeated by pinning), and the host is still checked once per new connection."""
    resolver = FakeResolver(["127.0.0.1"])
    opts = DownloadOptions(
        **FAST, resolver=resolver, allowed_hosts=frozenset({"images.example"}), concurrency=1
    )

    async def run() -> list[bytes]:
        async with make_client(opts) as client:
            return [
                await fetch_bytes(client, f"http://images.example:{server.port}/good/{i}.jpg", opts)
                for i in range(4)
            ]

    bodies = asyncio.run(run())
    assert all(body[:2] == b"\xff\xd8" for body in bodies)
    assert connects == ["127.0.0.1"]
    assert resolver.lookups == ["images.example"]


class CountingStream(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_extra_info(self, info: str):
        self.asked.append(info)
        return f"inner:{info}"


def test_idle_check_polls_the_socket_without_asking_the_stream() -> None:
    """`is_readable` (asked for every pooled connection on every request) is answered from
    the socket: False while idle, True once the server closed it; other keys pass through."""
    import socket

    ours, theirs = socket.socketpair()
    try:
        inner = CountingStream()
        stream = KeepAliveCheckedStream(inner, ours)
        assert stream.get_extra_info("is_readable") is False
        theirs.close()
        assert stream.get_extra_info("is_readable") is True
        assert inner.asked == []
        assert stream.get_extra_info("server_addr") == "inner:server_addr"
        assert KeepAliveCheckedStream(inner, None).get_extra_info("is_readable") == (
            "inner:is_readable"
        )
    finally:
        ours.close()
