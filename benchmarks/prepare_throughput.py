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

Per image, each phase reports: client CPU (this process, all threads, plus any waited-for
children), the CPU of the thread that runs the event loop (serial: it holds the GIL) and
the server's CPU for the same requests (asked from the server itself), with the load
average before and after. CPU times are far less sensitive to other jobs on the machine
than images/s, so the run also prints the ceiling they imply: no concurrency setting can
beat `cores / (client + server CPU per image)`, nor `1 / event-loop CPU per image`.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CPU_PATH = "/__cpu__"


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
                if path == CPU_PATH:  # the server's own CPU seconds, so far (no latency)
                    body = repr(time.process_time()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                    await writer.drain()
                    continue
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


@dataclass
class Phase:
    """What one client cost: wall seconds and CPU seconds, split by where they were spent."""

    seconds: float
    cpu_s: float  # this process, all threads, plus any child processes it waited for
    main_thread_cpu_s: float  # the thread running the event loop (GIL-bound, serial)
    server_cpu_s: float  # the test server's process, for the same requests
    load_before: float
    load_after: float
    peak_rss_mib: float


def server_cpu_s(base: str) -> float:
    import requests

    return float(requests.get(base + CPU_PATH, timeout=10).text)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(base: str, run: Callable[[], None]) -> Phase:
    load_before = os.getloadavg()[0]
    server_before = server_cpu_s(base)
    cpu_before = time.process_time() + children_cpu_s()
    main_before = time.thread_time()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    main_cpu = time.thread_time() - main_before
    cpu = time.process_time() + children_cpu_s() - cpu_before
    return Phase(
        seconds=seconds,
        cpu_s=cpu,
        main_thread_cpu_s=main_cpu,
        server_cpu_s=server_cpu_s(base) - server_before,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        peak_rss_mib=peak_rss_mib(),
    )


def reference_loop(urls: list[str], folder: Path) -> None:
    """The reference recipe's loop, faithfully: no timeout, no session, one at a time."""
    import requests
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, url in enumerate(urls):
        response = requests.get(url)
        image = Image.open(io.BytesIO(response.content))
        image.save(folder / f"{i}.jpg")


def vistune_prepare(urls: list[str], folder: Path, concurrency: int) -> dict:
    """Write the catalog CSV (a few ms), run `prepare_dataset` and check it kept every row."""
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
    manifest = prepare_dataset(config, show_progress=False)
    if manifest.rows_kept != len(urls):
        raise SystemExit(f"vistune kept {manifest.rows_kept}/{len(urls)}: {manifest.dropped}")
    return manifest.model_dump(include={"rows_kept", "images", "dropped"})


def per_image(phase: Phase, n: int) -> dict[str, float]:
    return {
        "seconds": phase.seconds,
        "images_per_s": n / phase.seconds,
        "client_cpu_ms_per_image": 1000 * phase.cpu_s / n,
        "main_thread_cpu_ms_per_image": 1000 * phase.main_thread_cpu_s / n,
        "server_cpu_ms_per_image": 1000 * phase.server_cpu_s / n,
        "client_cores_busy": phase.cpu_s / phase.seconds,
        "load_average_before": phase.load_before,
        "load_average_after": phase.load_after,
        "peak_rss_mib": phase.peak_rss_mib,
    }


def ceiling(vistune: dict[str, float], cpus: int, reference_ips: float) -> dict[str, float]:
    """The most images/s these CPU costs allow, whatever the concurrency.

    Two bounds: all cores busy with client + server work for every image, and the event
    loop's thread alone (it holds the GIL: its CPU per image is serial).
    """
    per_image_ms = vistune["client_cpu_ms_per_image"] + vistune["server_cpu_ms_per_image"]
    by_cores = 1000 * cpus / per_image_ms
    by_loop = 1000 / vistune["main_thread_cpu_ms_per_image"]
    best = min(by_cores, by_loop)
    return {
        "cpus": cpus,
        "max_images_per_s_all_cores": by_cores,
        "max_images_per_s_event_loop": by_loop,
        "max_images_per_s": best,
        "max_ratio_vs_measured_reference": best / reference_ips,
        "max_ratio_vs_42_images_per_s": best / 42.0,
    }


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
    base = f"http://127.0.0.1:{port}"
    urls = [base + path for path in images]
    work = Path(tempfile.mkdtemp(prefix="vistune-bench-"))
    manifest: dict = {}

    def run_vistune() -> None:
        manifest.update(vistune_prepare(urls, work / "vistune", args.concurrency))

    try:
        rss_start = peak_rss_mib()
        vistune_phase = measure(base, run_vistune)
        reference_phase = measure(base, lambda: reference_loop(urls, work / "reference"))
    finally:
        server.terminate()
        server.join()
        shutil.rmtree(work, ignore_errors=True)

    n = len(urls)
    cpus = os.cpu_count() or 1
    reference = per_image(reference_phase, n)
    vistune = per_image(vistune_phase, n)
    ratio = vistune["images_per_s"] / reference["images_per_s"]
    limits = ceiling(vistune, cpus, reference["images_per_s"])
    rows = [
        ("reference loop (requests, sequential)", reference),
        (f"vistune prepare (concurrency {args.concurrency})", vistune),
    ]
    print(f"{n} images of {args.image_size}px, {args.latency_ms:g} ms server latency")
    print(
        f"{'path':<40} {'seconds':>8} {'images/s':>9} {'client CPU':>11} {'loop thread':>12}"
        f" {'server CPU':>11} {'load':>10} {'peak RSS':>9}"
    )
    print(
        f"{'':<40} {'':>8} {'':>9} {'ms/image':>11} {'ms/image':>12} {'ms/image':>11}"
        f" {'before/after':>10} {'MiB':>9}"
    )
    for name, row in rows:
        print(
            f"{name:<40} {row['seconds']:>8.2f} {row['images_per_s']:>9.1f}"
            f" {row['client_cpu_ms_per_image']:>11.2f} {row['main_thread_cpu_ms_per_image']:>12.2f}"
            f" {row['server_cpu_ms_per_image']:>11.2f}"
            f" {row['load_average_before']:>4.1f}/{row['load_average_after']:<4.1f}"
            f" {row['peak_rss_mib']:>9.0f}"
        )
    print(f"speed-up: {ratio:.1f}x (target >= 15x); process RSS before: {rss_start:.0f} MiB")
    print(
        f"CPU ceiling on {cpus} CPUs: {limits['max_images_per_s_all_cores']:.0f} images/s with"
        f" every core on client + server work, {limits['max_images_per_s_event_loop']:.0f} images/s"
        f" for one event-loop thread -> at most {limits['max_images_per_s']:.0f} images/s ="
        f" {limits['max_ratio_vs_measured_reference']:.1f}x this run's reference,"
        f" {limits['max_ratio_vs_42_images_per_s']:.1f}x of 42 images/s"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "images": n,
        "image_size": args.image_size,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "reference": reference,
        "vistune": vistune,
        "speedup": ratio,
        "ceiling": limits,
        "peak_rss_mib_start": rss_start,
        "manifest": manifest,
        "machine": {"python": platform.python_version(), "cpus": cpus},
    }
    (RESULTS / "prepare_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'prepare_throughput.json'}")


if __name__ == "__main__":
    main()
