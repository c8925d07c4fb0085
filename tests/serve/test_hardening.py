"""Hostile clients and shutdowns: tokens, SIGTERM under a queue, limits, health, docs, fuzz.

The model is a fake `run_batch` (the HTTP layer does not care what answers), so these tests
exercise the server's own behaviour quickly and deterministically.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from vistune.errors import ConfigError
from vistune.serve.app import create_app
from vistune.serve.config import ServeConfig
from vistune.serve.predictor import Prediction
from vistune.serve.server import serving_in_thread, start_in_thread

TOKEN = "0123456789abcdef-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def png(color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def files(data: bytes) -> dict[str, Any]:
    return {"image": ("a.png", data, "image/png")}


def fake_model(delay_s: float = 0.0) -> Any:
    def run_batch(images: list[Image.Image]) -> list[Prediction]:
        time.sleep(delay_s)
        return [Prediction("t", "c", 1.0, f"{image.size}", None) for image in images]

    return run_batch


@pytest.mark.parametrize("token", ["", "   ", "short", "abc def ghi jkl"])
def test_empty_or_short_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        ServeConfig.load(None, None, model="m", token=token)
    assert ServeConfig.load(None, None, model="m", token=TOKEN).token is not None


def test_empty_token_on_the_command_line_exits_with_one_line() -> None:
    from typer.testing import CliRunner

    from vistune.cli import app

    result = CliRunner().invoke(app, ["serve", "tiny", "--token", ""])
    assert result.exit_code == 1
    assert "token" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sigterm_with_a_long_queue_answers_every_request_200_or_503() -> None:
    """The queue cannot finish in the grace period: what ran got 200, the rest 503 with
    Retry-After; nothing got a 500 and every request got an answer."""
    config = ServeConfig(model="m", max_batch_size=2, max_wait_ms=0, shutdown_grace_s=0.6)
    app = create_app(fake_model(delay_s=0.2), config)
    background = start_in_thread(app)

    async def fire_then_stop() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=background.url, timeout=60) as client:
            requests = [
                asyncio.ensure_future(client.post("/v1/predict", files=files(png((i, 0, 0)))))
                for i in range(30)
            ]
            batcher = app.state.batcher
            while batcher.stats.requests + batcher.pending < 30:
                await asyncio.sleep(0.005)
            background.server.should_exit = True  # what SIGTERM sets
            return await asyncio.gather(*requests)

    responses = asyncio.run(fire_then_stop())
    background.thread.join(timeout=30)
    assert not background.thread.is_alive()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(503) >= 10, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0
            assert "shutting down" in response.json()["detail"]


def test_full_queue_answers_503_with_retry_after() -> None:
    config = ServeConfig(model="m", max_batch_size=1, max_wait_ms=0, max_queue=2)
    with serving_in_thread(create_app(fake_model(delay_s=0.1), config)) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/v1/predict", files=files(png())) for _ in range(12))
                )

        responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    busy = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] and "busy" in r.json()["detail"] for r in busy), [
        r.json() for r in busy
    ]


def test_concurrent_decodes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import vistune.serve.app as app_module

    lock = threading.Lock()
    running, peak = 0, 0
    real_decode = app_module.decode_image

    def counting_decode(data: bytes, *, max_pixels: int) -> Image.Image:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)
            return real_decode(data, max_pixels=max_pixels)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(app_module, "decode_image", counting_decode)
    config = ServeConfig(model="m", max_concurrent_decodes=2, max_wait_ms=0)
    with serving_in_thread(create_app(fake_model(), config)) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/v1/predict", files=files(png())) for _ in range(10))
                )

        statuses = [r.status_code for r in asyncio.run(burst())]
    assert statuses == [200] * 10
    assert peak == 2


def test_health_hides_paths_and_docs_follow_the_token() -> None:
    secret_path = "/srv/models/customer-x/run-7"
    locked = create_app(fake_model(), ServeConfig(model=secret_path, token=TOKEN))
    open_app = create_app(fake_model(), ServeConfig(model=secret_path))
    with serving_in_thread(locked) as url:
        anonymous = httpx.get(f"{url}/healthz")
        assert anonymous.json() == {"status": "ok", "auth_required": True}
        assert httpx.get(f"{url}/healthz", headers=AUTH).json()["model"] == secret_path
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
            assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 200, path
        assert "/v1/predict" in httpx.get(f"{url}/openapi.json", headers=AUTH).json()["paths"]
    with serving_in_thread(open_app) as url:
        health = httpx.get(f"{url}/healthz").text
        assert "/srv" not in health and "customer-x" not in health
        assert httpx.get(f"{url}/healthz").json()["model"] == "run-7"
        assert httpx.get(f"{url}/openapi.json").status_code == 200


def test_client_disconnect_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving_in_thread(create_app(fake_model(), ServeConfig(model="m"))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = (
                "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            sock.sendall(head.encode())
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while "disconnected" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "disconnected during POST /v1/predict" in caplog.text
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


def test_mutated_uploads_get_4xx_never_5xx(image_mutants: Any) -> None:
    """A slice of the decoder fuzz corpus through HTTP: every answer is 200 or 4xx."""
    config = ServeConfig(model="m", max_wait_ms=0, max_image_pixels=1_000_000)
    with serving_in_thread(create_app(fake_model(), config)) as url, httpx.Client() as client:
        statuses = {
            client.post(f"{url}/v1/predict", files=files(data)).status_code
            for _fmt, data in image_mutants(300, seed=15)
        }
    assert statuses <= {200, 400, 413, 415}, statuses
    assert 400 in statuses


def test_truncated_jpeg_upload_is_400_not_500() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 99, 9)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    with serving_in_thread(create_app(fake_model(), ServeConfig(model="m"))) as url:
        for cut in (8, 40, len(data) // 2):
            response = httpx.post(
                f"{url}/v1/predict", files={"image": ("a.jpg", data[:cut], "image/jpeg")}
            )
            assert response.status_code == 400, (cut, response.text)
