"""Serving under load: micro-batching vs one request per forward pass.

`vistune serve` runs in its own process on 127.0.0.1 with the tiny Phi-3-vision sized as in
`configs/tiny-demo.yaml` (or any model given with --model), once with micro-batching
(--max-batch-size 16) and once without (--max-batch-size 1). Each time, after a short
warm-up, bursts of N requests (default 200) are sent at once, each a multipart upload of a
different catalog image, and every request must come back 200. Both servers run side by side
and the bursts alternate between them (3 each by default), so load from other processes
hits both modes alike. The OpenAI chat endpoint (`POST /v1/chat/completions`, the image as a
`data:` URL in a JSON body) is measured the same way on the micro-batching server, beside
`/v1/predict`. Reported: errors, p50/p95/p99 latency as the client sees it (pooled over
bursts), requests/s of a whole burst (median over bursts), the server's batch sizes, and the
requests/s ratios batched / unbatched and chat / predict.

Then SIGTERM under load: a third server (micro-batching, `shutdown_grace_s` = --grace-s)
gets --sigterm-requests requests at once (default 290, far more than it can answer within
the grace period); once all are accepted (queued or running) it receives SIGTERM. Every
accepted request must get an HTTP answer: 200 if it ran, 503 with Retry-After if the grace
period ended first; the count of 500s (and of requests left without an answer) must be 0.

Usage: python benchmarks/serve_load.py [--requests 200] [--repeats 3] [--max-batch-size 16]
       [--max-wait-ms 10] [--max-new-tokens 32] [--model RUN_DIR_OR_FOLDER]
       [--sigterm-requests 290] [--grace-s 3] [--skip-bursts]
Prints tables and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
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
#: The row of the OpenAI chat endpoint (on the micro-batching server).
CHAT = "chat completions, micro-batching"


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

    frame = generate_catalog(work / "sample", rows=count, seed=0, image_size=128, preset="simple")
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


def start_server(
    model: str, batch: int, wait_ms: float, new_tokens: int, *extra: str
) -> tuple[Any, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "vistune.cli", "serve", model,
        "--port", str(port),
        "--max-batch-size", str(batch),
        "--max-wait-ms", str(wait_ms),
        "--set", f"max_new_tokens={new_tokens}",
        *extra,
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


def chat_body(data: bytes, max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat request: the question as text, the image as a data: URL."""
    from vistune.answer import DEFAULT_QUESTION

    image_url = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    content = [
        {"type": "text", "text": DEFAULT_QUESTION},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]
    return {
        "model": "served",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


async def burst(
    url: str, images: list[bytes], chat: dict[str, Any] | None = None
) -> tuple[list[float], list[float], list[str], float]:
    """Send every image at once: client latencies (s), server latencies (s), errors, wall (s).

    `chat` (model name and max_tokens) sends OpenAI chat requests instead of /v1/predict.
    """
    limits = httpx.Limits(max_connections=len(images), max_keepalive_connections=len(images))
    bodies = (
        [chat_body(d, chat["max_tokens"]) | {"model": chat["model"]} for d in images]
        if chat
        else None
    )
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(index: int, data: bytes) -> tuple[float, float, str | None]:
            started = time.perf_counter()
            server_s, error = float("nan"), None
            try:
                if bodies is not None:
                    response = await client.post("/v1/chat/completions", json=bodies[index])
                else:
                    response = await client.post(
                        "/v1/predict", files={"image": ("p.png", data, "image/png")}
                    )
                if response.status_code == 200:
                    body = response.json()
                    server_s = (body["vistune"] if bodies else body)["latency_ms"] / 1000
                else:
                    error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - started, server_s, error

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i, data) for i, data in enumerate(images)))
        wall = time.perf_counter() - started
    errors = [r[2] for r in results if r[2]]
    return [r[0] for r in results], [r[1] for r in results if not r[2]], errors, wall


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def summarise(bursts: list[dict[str, Any]], batch: int, wait_ms: float) -> dict[str, Any]:
    """Pool the latencies of every burst; requests/s is the median over bursts."""
    latencies = [x for b in bursts for x in b["latencies"]]
    server = [x for b in bursts for x in b["server_latencies"]]
    errors = [e for b in bursts for e in b["errors"]]
    return {
        "max_batch_size": batch,
        "max_wait_ms": wait_ms,
        "bursts": len(bursts),
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "server_p50_ms": 1000 * percentile(server, 50) if server else None,
        "requests_per_s": statistics.median(b["requests_per_s"] for b in bursts),
        "requests_per_s_each": [round(b["requests_per_s"], 2) for b in bursts],
        "forward_batches": sum(b["batches"] for b in bursts),
        "mean_batch_size": sum(b["served"] for b in bursts)
        / max(1, sum(b["batches"] for b in bursts)),
        "largest_batch": max(b["largest_batch"] for b in bursts),
    }


def run_burst(url: str, images: list[bytes], chat: dict[str, Any] | None = None) -> dict[str, Any]:
    """One burst against a running server, with the server's batch counters around it."""
    before = httpx.get(f"{url}/healthz").json()["batching"]
    latencies, server_latencies, errors, wall = asyncio.run(burst(url, images, chat))
    after = httpx.get(f"{url}/healthz").json()["batching"]
    return {
        "latencies": latencies,
        "server_latencies": server_latencies,
        "errors": errors,
        "requests_per_s": len(images) / wall,
        "batches": after["batches"] - before["batches"],
        "served": after["requests"] - before["requests"],
        "largest_batch": after["max_batch_size_seen"],
    }


def sigterm_under_load(
    model: str, images: list[bytes], batch: int, wait_ms: float, new_tokens: int, grace_s: float
) -> dict[str, Any]:
    """Fire every image at once, SIGTERM the server once all are accepted, count answers."""
    process, url = start_server(
        model, batch, wait_ms, new_tokens,
        "--set", f"shutdown_grace_s={grace_s}",
        "--set", f"max_queue={2 * len(images)}",  # accept them all: this run is about SIGTERM
    )  # fmt: skip
    for data in images[:4]:  # warm-up
        httpx.post(f"{url}/v1/predict", files={"image": ("w.png", data, "image/png")},
                   timeout=600).raise_for_status()  # fmt: skip
    before = httpx.get(f"{url}/healthz").json()["batching"]["requests"]

    async def fire() -> tuple[list[Any], float, float, dict[str, Any]]:
        limits = httpx.Limits(max_connections=len(images), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

            async def one(data: bytes) -> Any:
                try:
                    return await client.post(
                        "/v1/predict", files={"image": ("p.png", data, "image/png")}
                    )
                except httpx.HTTPError as exc:
                    return exc

            tasks = [asyncio.ensure_future(one(data)) for data in images]
            deadline = time.monotonic() + 120
            async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
                while time.monotonic() < deadline:  # all accepted: queued or already run
                    health = (await probe.get("/healthz")).json()
                    accepted = health["pending"] + health["batching"]["requests"] - before
                    if accepted >= len(images):
                        break
                    await asyncio.sleep(0.02)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*tasks)
            return results, signalled, time.monotonic(), health

    results, signalled, answered, at_signal = asyncio.run(fire())
    process.wait(timeout=600)
    exited = time.monotonic()
    statuses = [r.status_code for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 503]
    retry_after = [r.headers.get("retry-after") for r in refused]
    shutting_down = sum("shutting down" in r.json().get("detail", "") for r in refused)
    unanswered = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, httpx.Response)]
    return {
        "requests": len(images),
        "grace_s": grace_s,
        "queued_at_sigterm": at_signal["pending"],
        "answered_before_sigterm": at_signal["batching"]["requests"] - before,
        "ok_200": statuses.count(200),
        "unavailable_503": statuses.count(503),
        "server_error_5xx": sum(500 <= s < 600 and s != 503 for s in statuses),
        "other_status": sorted({s for s in statuses if s not in (200, 503)}),
        "unanswered": len(unanswered),
        "unanswered_examples": unanswered[:3],
        "503_with_retry_after": sum(1 for value in retry_after if value),
        "503_shutting_down": shutting_down,
        "accepted_at_sigterm": at_signal["pending"] + at_signal["batching"]["requests"] - before,
        "seconds_sigterm_to_last_answer": round(answered - signalled, 2),
        "seconds_sigterm_to_exit": round(exited - signalled, 2),
        "exit_code": process.returncode,
    }


def print_sigterm(console: Any, row: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"SIGTERM with {row['requests']} requests accepted, {row['queued_at_sigterm']} "
        f"queued (grace {row['grace_s']:g} s)"
    )
    for column in ("200", "503 (Retry-After)", "500", "unanswered", "SIGTERM->exit s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(row["ok_200"]),
        f"{row['unavailable_503']} ({row['503_with_retry_after']})",
        str(row["server_error_5xx"]),
        str(row["unanswered"]),
        f"{row['seconds_sigterm_to_exit']:.1f}",
    )
    console.print(table)
    verdict = row["server_error_5xx"] == 0 and row["unanswered"] == 0
    console.print(
        "every accepted request answered, no 500: "
        + ("[bold green]yes[/]" if verdict else "[bold red]NO[/]")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="bursts per mode, alternating")
    parser.add_argument("--model", help="run dir or model folder (default: tiny, built here)")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    parser.add_argument("--sigterm-requests", type=int, default=290)
    parser.add_argument("--grace-s", type=float, default=3.0, help="shutdown_grace_s")
    parser.add_argument("--skip-bursts", action="store_true", help="only the SIGTERM run")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vistune-serve-load-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_model(work))
        images = catalog_images(work, max(args.requests, args.sigterm_requests))
        if not args.skip_bursts:
            rows = run_bursts(console, model, images[: args.requests], args)
        console.print(f"SIGTERM run: {args.sigterm_requests} requests, grace {args.grace_s:g} s")
        sigterm = sigterm_under_load(
            model,
            images[: args.sigterm_requests],
            args.max_batch_size,
            args.max_wait_ms,
            args.max_new_tokens,
            args.grace_s,
        )

    ratio = chat_ratio = None
    if rows:
        batched, single = rows["micro-batching"], rows["one per pass"]
        ratio = batched["requests_per_s"] / single["requests_per_s"]
        table = Table(
            title=f"vistune serve: bursts of {args.requests} concurrent requests on 127.0.0.1 "
            f"(median of {args.repeats})"
        )
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
        chat_ratio = rows[CHAT]["requests_per_s"] / batched["requests_per_s"]
        console.print(
            f"requests/s ratio chat / predict (both micro-batching): [bold]{chat_ratio:.2f}x[/]"
        )
    print_sigterm(console, sigterm)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "serve_load",
        "model": args.model or "tiny (configs/tiny-demo.yaml knobs, random weights)",
        "max_new_tokens": args.max_new_tokens,
        "requests_per_burst": args.requests,
        "runs": rows,
        "ratio_requests_per_s": ratio,
        "ratio_chat_to_predict_requests_per_s": chat_ratio,
        "sigterm_under_load": sigterm,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


def run_bursts(
    console: Any, model: str, images: list[bytes], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Micro-batching vs one per pass, both servers up, bursts alternating between them; the
    chat endpoint is measured on the micro-batching server beside /v1/predict."""
    modes = {"micro-batching": args.max_batch_size, "one per pass": 1}
    servers = {}
    try:
        for name, batch in modes.items():  # both up at once; bursts alternate between them
            servers[name] = start_server(model, batch, args.max_wait_ms, args.max_new_tokens)
            url = servers[name][1]
            for data in images[:4]:  # warm-up: first passes allocate memory
                httpx.post(f"{url}/v1/predict", files={"image": ("w.png", data, "image/png")},
                           timeout=600).raise_for_status()  # fmt: skip
        batched_url = servers["micro-batching"][1]
        served = httpx.get(f"{batched_url}/v1/models").json()["data"][0]["id"]
        chat = {"model": served, "max_tokens": args.max_new_tokens}
        httpx.post(f"{batched_url}/v1/chat/completions", json=chat_body(images[0],
                   args.max_new_tokens) | chat, timeout=600).raise_for_status()  # fmt: skip
        # measurement name -> (server, chat settings or None for /v1/predict)
        plan = {name: (name, None) for name in modes}
        plan[CHAT] = ("micro-batching", chat)
        bursts: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
        for repeat in range(args.repeats):
            for name, (server, chat_settings) in plan.items():
                console.print(f"burst {repeat + 1}/{args.repeats}, {name}: {len(images)} requests")
                bursts[name].append(run_burst(servers[server][1], images, chat_settings))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    batch_of = {**modes, CHAT: args.max_batch_size}
    return {name: summarise(bursts[name], batch_of[name], args.max_wait_ms) for name in plan}


if __name__ == "__main__":
    main()
