"""`vistune serve` against a live uvicorn server on 127.0.0.1 with the tiny Phi-3-vision."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from vistune.serve.server import serving_in_thread, start_in_thread


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_png() -> bytes:
    data = bytearray(png_bytes((1, 2, 3)))
    start = data.index(b"IDAT") + 8
    for i in range(start, start + 10):
        data[i] ^= 0xFF
    return bytes(data)


def upload(data: bytes, name: str = "photo.png", kind: str = "image/png") -> dict[str, Any]:
    return {"image": (name, data, kind)}


@pytest.fixture
def url(serve_app: Any) -> Iterator[str]:
    with serving_in_thread(serve_app(max_batch_size=8, max_wait_ms=50, max_upload_mb=0.25)) as base:
        yield base


def test_predict_returns_parsed_fields_raw_text_and_latency(url: str, tiny_predictor: Any) -> None:
    data = png_bytes((200, 30, 30))
    response = httpx.post(f"{url}/v1/predict", files=upload(data), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"title", "category", "full_price", "raw", "error", "latency_ms"}
    assert body["latency_ms"] > 0
    # Same answer as calling the model directly: the server adds transport, not behaviour.
    direct = tiny_predictor([Image.open(io.BytesIO(data)).convert("RGB")])[0]
    assert body["raw"] == direct.raw
    assert body["error"] == direct.error
    # A random tiny model does not produce the answer format: a parse failure with a reason,
    # never a made-up price.
    if body["error"] is not None:
        assert body["full_price"] is None


def test_health_and_upload_page(url: str) -> None:
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok"
    assert health["auth_required"] is False
    assert health["max_batch_size"] == 8
    page = httpx.get(f"{url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "v1/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained


def test_concurrent_requests_share_forward_passes(url: str, tiny_predictor: Any) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0)]
    payloads = [png_bytes(colors[i % 4]) for i in range(16)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/v1/predict", files=upload(p)) for p in payloads)
            )

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 16
    batching = httpx.get(f"{url}/healthz").json()["batching"]
    assert batching["requests"] == 16
    assert batching["max_batch_size_seen"] > 1  # requests really were batched
    assert batching["batches"] < 16
    assert sum(int(size) * n for size, n in batching["batch_sizes"].items()) == 16
    # Each request got its own image's answer (batching must not mix rows up).
    singles = {
        color: tiny_predictor([Image.new("RGB", (48, 40), color)])[0].raw for color in colors
    }
    for i, response in enumerate(responses):
        assert response.json()["raw"] == singles[colors[i % 4]]


@pytest.mark.parametrize(
    ("data", "kind", "status"),
    [
        (b"name,price\nbag,100\n", "text/csv", 415),
        (b"", "image/png", 400),
        (png_bytes((1, 2, 3))[:60], "image/png", 400),  # truncated PNG
        (b"GIF89a" + b"\x00" * 40, "image/gif", 415),  # a header and nothing readable
        (corrupt_png(), "image/png", 400),  # valid header, garbled pixel data
    ],
    ids=["not-an-image", "empty", "truncated", "gif-header-only", "corrupt-pixels"],
)
def test_bad_uploads_are_refused(url: str, data: bytes, kind: str, status: int) -> None:
    response = httpx.post(f"{url}/v1/predict", files=upload(data, "f", kind))
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_oversize_upload_is_refused_before_it_is_read(url: str) -> None:
    too_big = b"\x89PNG" + b"\x00" * 400_000  # limit is 0.25 MB
    response = httpx.post(f"{url}/v1/predict", files=upload(too_big))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_oversize_chunked_upload_is_cut_off(url: str) -> None:
    boundary = "vistuneboundary"

    def body() -> Iterator[bytes]:  # no Content-Length: the server must count while reading
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n"
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        for _ in range(40):
            yield b"\x00" * 16_384
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{url}/v1/predict",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413


def test_too_many_pixels_and_wrong_shapes_of_request(serve_app: Any) -> None:
    with serving_in_thread(serve_app(max_image_pixels=64 * 64)) as base:
        big = httpx.post(f"{base}/v1/predict", files=upload(png_bytes((9, 9, 9), (65, 65))))
        assert big.status_code == 413
        assert "pixels" in big.json()["detail"]
        ok = httpx.post(f"{base}/v1/predict", files=upload(png_bytes((9, 9, 9), (64, 64))))
        assert ok.status_code == 200
        raw = httpx.post(f"{base}/v1/predict", content=png_bytes((9, 9, 9)))
        assert raw.status_code == 415  # not multipart
        no_file = httpx.post(f"{base}/v1/predict", data={"note": "hello"}, files={})
        assert no_file.status_code in (400, 415)


def test_bearer_token_is_required_when_set(serve_app: Any) -> None:
    with serving_in_thread(serve_app(token="s3cret-token-0123")) as base:
        files = upload(png_bytes((10, 200, 10)))
        missing = httpx.post(f"{base}/v1/predict", files=files)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        for header in (
            "Bearer wrong",
            "Bearer s3cret-token-0123x",
            "Basic s3cret-token-0123",
            "s3cret",
        ):
            wrong = httpx.post(f"{base}/v1/predict", files=files, headers={"authorization": header})
            assert wrong.status_code == 401, header
        right = httpx.post(
            f"{base}/v1/predict", files=files, headers={"authorization": "Bearer s3cret-token-0123"}
        )
        assert right.status_code == 200, right.text
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "auth_required": True}
        health = httpx.get(
            f"{base}/healthz", headers={"authorization": "Bearer s3cret-token-0123"}
        ).json()
        assert health["auth_required"] is True
        assert health["batching"]["requests"] == 1  # refused requests never reached the model


def test_shutdown_answers_every_accepted_request(tiny_predictor: Any) -> None:
    from vistune.serve.app import create_app
    from vistune.serve.config import ServeConfig

    def slow(images: list[Image.Image]) -> Any:
        time.sleep(0.15)  # keep requests in flight while the server is told to stop
        return tiny_predictor(images)

    app = create_app(slow, ServeConfig(model="tiny-test", max_batch_size=2, max_wait_ms=0))
    background = start_in_thread(app)

    async def fire_then_stop() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=background.url, timeout=60) as client:
            requests = [
                asyncio.ensure_future(
                    client.post("/v1/predict", files=upload(png_bytes((i, 0, 0))))
                )
                for i in range(6)
            ]
            batcher = app.state.batcher
            while batcher.stats.requests + batcher.pending < 6:  # all accepted, most queued
                await asyncio.sleep(0.005)
            assert batcher.pending >= 2
            background.server.should_exit = True
            return await asyncio.gather(*requests)

    responses = asyncio.run(fire_then_stop())
    background.thread.join(timeout=30)
    assert not background.thread.is_alive()
    assert [r.status_code for r in responses] == [200] * 6
    assert app.state.batcher.stats.requests == 6
