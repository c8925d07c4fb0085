"""Images/s of `vistune prepare` vs the reference's sequential download loop.

Both fetch the same N distinct product images from one local HTTP server that waits
`--latency-ms` (default 20 ms) before every response, like a CDN a few hops away:

* reference: the loop the public recipe uses, one image at a time:
  `requests.get(url)` (no timeout, no session), `Image.open(BytesIO(r.content))`,
  `image.save(path)`;
* vistune: `prepare_dataset` on a CSV of the same URLs: concurrent httpx downloads,
  full validation, content-hash storage, splits and Parquet output (the whole command,
  not just the download).

The server runs in its own process (an asyncio server, so it is never the bottleneck and
does not share a GIL with the clients); both clients run in this process, one after the
other. Peak RSS is this process's high-water mark (ru_maxrss) after each phase.

    python benchmarks/prepare_throughput.py [--images 1000] [--latency-ms 20] [--concurrency 16]

Prints a table and writes benchmarks/results/prepare_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def render_images(count: int, size: int) -> dict[str, bytes]:
    """Distinct JPEG product shots from the sample renderer, keyed by URL path."""
    from vistune.data.sample import CATEGORIES, MATERIALS, render_product

    images = {}
    for i in range(count):
        image = render_product(
            CATEGORIES[i % len(CATEGORIES)],
            MATERIALS[(i // len(CATEGORIES)) % len(MATERIALS)],
            bool(i % 3 == 0),
            bool(i % 2 == 0),
            size,
            seed=0,
            index=i,
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images[f"/img/{i}.jpg"] = buffer.getvalue()
    return images


def serve(images: dict[str, bytes], latency_s: float, ready) -> None:
    """A keep-alive HTTP/1.1 server: sleep `latency_s`, then send the image (or 404)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                await asyncio.sleep(latency_s)
                body = images.get(path)
                status = "200 OK" if body is not None else "404 Not Found"
                body = body if body is not None else b"not found"
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        ready.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_loop(urls: list[str], folder: Path) -> tuple[float, float]:
    """The reference recipe's loop, faithfully: no timeout, no session, one at a time."""
    import requests
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    for i, url in enumerate(urls):
        response = requests.get(url)
        image = Image.open(io.BytesIO(response.content))
        image.save(folder / f"{i}.jpg")
    return time.perf_counter() - started, time.process_time() - cpu


def vistune_prepare(urls: list[str], folder: Path, concurrency: int) -> tuple[float, float, dict]:
    import pandas as pd

    from vistune.data.prepare import PrepareConfig, prepare_dataset

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "urls.csv"
    pd.DataFrame(
        {
            "product_code": [f"p{i}" for i in range(len(urls))],
            "title": [f"Item {i}" for i in range(len(urls))],
            "category3_code": [f"C{i % 8}" for i in range(len(urls))],
            "full_price": [100.0 + i for i in range(len(urls))],
            "imageurl": urls,
        }
    ).to_csv(source, index=False)
    config = PrepareConfig(
        source=str(source),
        out=folder / "out",
        allow_hosts=["127.0.0.1"],
        download={"concurrency": concurrency},
    )
    started, cpu = time.perf_counter(), time.process_time()
    manifest = prepare_dataset(config, show_progress=False)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if manifest.rows_kept != len(urls):
        raise SystemExit(f"vistune kept {manifest.rows_kept}/{len(urls)}: {manifest.dropped}")
    return elapsed, cpu, manifest.model_dump(include={"rows_kept", "images", "dropped"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    images = render_images(args.images, args.image_size)
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    server = multiprocessing.get_context("fork").Process(
        target=serve, args=(images, args.latency_ms / 1000, send), daemon=True
    )
    server.start()
    port = receive.recv()
    urls = [f"http://127.0.0.1:{port}{path}" for path in images]
    work = Path(tempfile.mkdtemp(prefix="vistune-bench-"))
    try:
        rss_start = peak_rss_mib()
        vistune_s, vistune_cpu, manifest = vistune_prepare(urls, work / "vistune", args.concurrency)
        rss_vistune = peak_rss_mib()
        reference_s, reference_cpu = reference_loop(urls, work / "reference")
        rss_reference = peak_rss_mib()
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)

    n = len(urls)
    rows = [
        ("reference loop (requests, sequential)", reference_s, reference_cpu, rss_reference),
        (f"vistune prepare (concurrency {args.concurrency})", vistune_s, vistune_cpu, rss_vistune),
    ]
    ratio = (n / vistune_s) / (n / reference_s)
    print(f"{n} images of {args.image_size}px, {args.latency_ms:g} ms server latency")
    print(f"{'path':<40} {'seconds':>8} {'images/s':>9} {'CPU ms/image':>13} {'peak RSS MiB':>13}")
    for name, seconds, cpu, rss in rows:
        print(
            f"{name:<40} {seconds:>8.2f} {n / seconds:>9.1f} {1000 * cpu / n:>13.2f} {rss:>13.0f}"
        )
    print(f"speed-up: {ratio:.1f}x (target >= 15x); process RSS before: {rss_start:.0f} MiB")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "images": n,
        "image_size": args.image_size,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "reference_seconds": reference_s,
        "reference_images_per_s": n / reference_s,
        "reference_cpu_ms_per_image": 1000 * reference_cpu / n,
        "vistune_cpu_ms_per_image": 1000 * vistune_cpu / n,
        "load_average": os.getloadavg()[0],
        "vistune_seconds": vistune_s,
        "vistune_images_per_s": n / vistune_s,
        "speedup": ratio,
        "peak_rss_mib": {
            "start": rss_start,
            "after_vistune": rss_vistune,
            "after_reference": rss_reference,
        },
        "manifest": manifest,
        "machine": {"python": platform.python_version(), "cpus": multiprocessing.cpu_count()},
    }
    (RESULTS / "prepare_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'prepare_throughput.json'}")


if __name__ == "__main__":
    main()
