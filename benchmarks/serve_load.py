"""Serving under load: micro-batching vs one request per forward pass.

`vistune serve` runs in its own process on 127.0.0.1 with the tiny Phi-3-vision sized as in
`configs/tiny-demo.yaml` (or any model given with --model), once with micro-batching
(--max-batch-size 16) and once without (--max-batch-size 1). Each time, after a short
warm-up, N requests (default 200) are sent at once, each a multipart upload of a different
catalog image, and every request must come back 200. Reported: errors, p50/p95/p99 latency
as the client sees it, requests/s over the whole burst, the server's batch sizes, and the
requests/s ratio batched / unbatched.

Usage: python benchmarks/serve_load.py [--requests 200] [--max-batch-size 16]
       [--max-wait-ms 10] [--max-new-tokens 32] [--model RUN_DIR_OR_FOLDER]
Prints a table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def build_model(work: Path) -> Path:
    """The tiny Phi-3-vision with the demo's size knobs and a tokenizer fitted to a catalog."""
    import yaml

    from vistune.models.tiny import build_tiny_phi3v

    knobs = yaml.safe_load((ROOT / "configs" / "tiny-demo.yaml").read_text())["tiny"]
    return build_tiny_phi3v(work / "model", seed=0, **knobs)


def catalog_images(work: Path, count: int) -> list[bytes]:
    """PNG bytes of `count` distinct synthetic product photos."""
    from PIL import Image

    from vistune.data.sample import generate_catalog

    frame = generate_catalog(work / "sample", rows=count, seed=0, image_size=128)
    images = []
    for relpath in frame["image"]:
        with Image.open(work / "sample" / relpath) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            images.append(buffer.getvalue())
    return images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, batch: int, wait_ms: float, new_tokens: int) -> tuple[Any, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "vistune.cli", "serve", model,
        "--port", str(port),
        "--max-batch-size", str(batch),
        "--max-wait-ms", str(wait_ms),
        "--set", f"max_new_tokens={new_tokens}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not come up within 180 s")


async def burst(url: str, images: list[bytes]) -> tuple[list[float], list[str], float]:
    """Send every image at once; per-request latencies (s), error strings, wall time (s)."""
    limits = httpx.Limits(max_connections=len(images), max_keepalive_connections=len(images))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(data: bytes) -> tuple[float, str | None]:
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/predict", files={"image": ("p.png", data, "image/png")}
                )
                error = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - started, error

        started = time.perf_counter()
        results = await asyncio.gather(*(one(data) for data in images))
        wall = time.perf_counter() - started
    return [r[0] for r in results], [r[1] for r in results if r[1]], wall


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def measure(model: str, images: list[bytes], batch: int, wait_ms: float, tokens: int) -> dict:
    process, url = start_server(model, batch, wait_ms, tokens)
    try:
        for data in images[:4]:  # warm-up: first forward passes allocate and compile kernels
            httpx.post(f"{url}/v1/predict", files={"image": ("w.png", data, "image/png")},
                       timeout=600).raise_for_status()  # fmt: skip
        before = httpx.get(f"{url}/healthz").json()["batching"]
        latencies, errors, wall = asyncio.run(burst(url, images))
        after = httpx.get(f"{url}/healthz").json()["batching"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    batches = after["batches"] - before["batches"]
    served = after["requests"] - before["requests"]
    return {
        "max_batch_size": batch,
        "max_wait_ms": wait_ms,
        "requests": len(images),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "requests_per_s": len(images) / wall,
        "wall_s": wall,
        "forward_batches": batches,
        "mean_batch_size": served / batches if batches else 0.0,
        "largest_batch": after["max_batch_size_seen"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", help="run dir or model folder (default: tiny, built here)")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory(prefix="vistune-serve-load-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_model(work))
        images = catalog_images(work, args.requests)
        rows = {}
        for name, batch in (("micro-batching", args.max_batch_size), ("one per pass", 1)):
            console.print(f"{name}: {args.requests} concurrent requests ...")
            rows[name] = measure(model, images, batch, args.max_wait_ms, args.max_new_tokens)

    batched, single = rows["micro-batching"], rows["one per pass"]
    ratio = batched["requests_per_s"] / single["requests_per_s"]
    table = Table(title=f"vistune serve, {args.requests} concurrent requests on 127.0.0.1")
    for column in ("mode", "batch", "errors", "p50 ms", "p95 ms", "req/s", "mean batch"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            str(row["max_batch_size"]),
            str(row["errors"]),
            f"{row['p50_ms']:.0f}",
            f"{row['p95_ms']:.0f}",
            f"{row['requests_per_s']:.1f}",
            f"{row['mean_batch_size']:.1f}",
        )
    console.print(table)
    console.print(f"requests/s ratio micro-batching / one per pass: [bold]{ratio:.2f}x[/]")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "serve_load",
        "model": args.model or "tiny (configs/tiny-demo.yaml knobs, random weights)",
        "max_new_tokens": args.max_new_tokens,
        "runs": rows,
        "ratio_requests_per_s": ratio,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
