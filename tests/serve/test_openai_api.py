"""The OpenAI chat API of `vistune serve`, driven by the real `openai` client package against a
live uvicorn server on 127.0.0.1 around the tiny Phi-3-vision."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from vistune.answer import parse_answer
from vistune.serve.server import serving_in_thread

TOKEN = "s3cret-token-0123456789"
QUESTION = "What is shown in this image?"


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def user_message(url: str | None, text: str | None = QUESTION) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": content}]


@pytest.fixture
def url(serve_app: Any) -> Iterator[str]:
    app = serve_app(max_batch_size=8, max_wait_ms=50, max_upload_mb=0.25, token=TOKEN)
    with serving_in_thread(app) as base:
        yield base


def client_for(url: str, token: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=120)


def direct_answer(predictor: Any, data: bytes, question: str, max_new_tokens: int) -> str:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return predictor.vlm.generate([image], [question], max_new_tokens=max_new_tokens)[0]


def test_chat_completion_answers_like_the_model(url: str, tiny_predictor: Any) -> None:
    data = png_bytes((200, 30, 30))
    client = client_for(url)
    assert [m.id for m in client.models.list().data] == ["tiny-test"]
    completion = client.chat.completions.create(
        model="tiny-test", messages=user_message(data_url(data)), max_tokens=10, temperature=0
    )
    content = completion.choices[0].message.content
    assert content == direct_answer(tiny_predictor, data, QUESTION, 10)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    # the parsed fields, re-derived from the text with the parser itself
    parsed = parse_answer(content)
    fields = completion.vistune  # extra field kept by the openai client
    assert (fields["title"], fields["category"], fields["full_price"], fields["error"]) == (
        parsed.title, parsed.category, parsed.price, parsed.error,
    )  # fmt: skip
    tokenizer = tiny_predictor.vlm.processor.tokenizer
    image_tokens = tiny_predictor.vlm.processor.image_processor.num_tokens_for(
        Image.open(io.BytesIO(data))
    )
    usage = completion.usage
    assert usage.completion_tokens == min(
        10, len(tokenizer(content, add_special_tokens=False)["input_ids"])
    )
    assert usage.prompt_tokens > image_tokens + len(tokenizer(QUESTION)["input_ids"])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_gives_the_same_answer(url: str) -> None:
    data = png_bytes((30, 200, 30))
    client = client_for(url)
    messages = user_message(data_url(data))
    plain = client.chat.completions.create(model="tiny-test", messages=messages, max_tokens=8)
    chunks = list(
        client.chat.completions.create(
            model="tiny-test",
            messages=messages,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1
    assert finished[0].vistune["error"] == plain.vistune["error"]
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_image_only_message_is_asked_the_trained_question(url: str, tiny_predictor: Any) -> None:
    data = png_bytes((10, 10, 220))
    completion = client_for(url).chat.completions.create(
        model="tiny-test", messages=user_message(data_url(data), text=None), max_tokens=6
    )
    expected = direct_answer(tiny_predictor, data, tiny_predictor.question, 6)
    assert completion.choices[0].message.content == expected


def test_bad_images_and_bad_requests_are_4xx(url: str) -> None:
    client = client_for(url)
    corrupt = bytearray(png_bytes((1, 2, 3)))
    start = corrupt.index(b"IDAT") + 8
    corrupt[start : start + 10] = bytes(b ^ 0xFF for b in corrupt[start : start + 10])
    cases = {
        "not an image": data_url(b"hello, not an image", "image/png"),
        "corrupt png": data_url(bytes(corrupt)),
        "not base64": "data:image/png;base64,@@@@",
        "no base64 marker": "data:image/png,abc",
        "http without the flag": "http://example.com/a.png",
        "file url": "file:///etc/passwd",
    }
    for name, image_url in cases.items():
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny-test", messages=user_message(image_url))
        assert 400 <= caught.value.status_code < 500, name
        assert caught.value.body["message"], name  # OpenAI error shape
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=user_message(None))
    two_turns = [*user_message(None), {"role": "assistant", "content": "x"}, *user_message(None)]
    with pytest.raises(openai.BadRequestError, match="one user message"):
        client.chat.completions.create(model="tiny-test", messages=two_turns)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-test", messages=user_message(None), n=2)
    raw = httpx.post(
        f"{url}/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert raw.status_code == 400


def test_missing_or_wrong_token_is_401(url: str) -> None:
    messages = user_message(data_url(png_bytes((5, 5, 5))))
    with pytest.raises(openai.AuthenticationError):
        client_for(url, "wrong").chat.completions.create(model="tiny-test", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        client_for(url, "wrong").models.list()
    # no Authorization header at all (the openai client always sends one)
    missing = httpx.post(
        f"{url}/v1/chat/completions", json={"model": "tiny-test", "messages": messages}
    )
    assert missing.status_code == 401
    assert httpx.get(f"{url}/v1/models").status_code == 401


def test_oversize_request_is_413(url: str) -> None:
    noise = Image.frombytes("RGB", (400, 400), random.Random(0).randbytes(400 * 400 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")  # ~ 480 kB of incompressible pixels, limit is 0.25 MB
    assert len(buffer.getvalue()) > 0.25 * 2**20
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(url).chat.completions.create(
            model="tiny-test", messages=user_message(data_url(buffer.getvalue()))
        )
    assert caught.value.status_code == 413


def test_burst_of_chat_and_predict_requests_has_no_errors(url: str, tiny_predictor: Any) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0)]
    images = [png_bytes(colors[i % 4], (40 + i, 40)) for i in range(24)]

    async def fire() -> tuple[list[Any], list[httpx.Response]]:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=300)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as http:
            chats = [
                client.chat.completions.create(
                    model="tiny-test", messages=user_message(data_url(d)), max_tokens=6
                )
                for d in images
            ]
            predicts = [
                http.post("/v1/predict", files={"image": ("p.png", d, "image/png")})
                for d in images[:4]
            ]
            results = await asyncio.gather(*chats, *predicts, return_exceptions=True)
        await client.close()
        return results[: len(chats)], results[len(chats) :]

    auth = {"authorization": f"Bearer {TOKEN}"}  # load figures are for trusted callers
    before = httpx.get(f"{url}/healthz", headers=auth).json()["batching"]
    chats, predicts = asyncio.run(fire())
    errors = [r for r in [*chats, *predicts] if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert all(r.status_code == 200 for r in predicts)
    after = httpx.get(f"{url}/healthz", headers=auth).json()["batching"]
    assert after["requests"] - before["requests"] == 28
    assert after["batches"] - before["batches"] < 28  # requests shared forward passes
    # batched answers are the answers each image gets alone
    for data, completion in list(zip(images, chats, strict=True))[:4]:
        assert completion.choices[0].message.content == direct_answer(
            tiny_predictor, data, QUESTION, 6
        )
    for data, response in zip(images[:4], predicts, strict=True):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert response.json()["raw"] == tiny_predictor([image])[0].raw


@pytest.fixture
def image_server() -> Iterator[str]:
    """A local HTTP server with one PNG at /p.png."""
    payload = png_bytes((120, 60, 30))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/p.png"
    finally:
        server.shutdown()
        server.server_close()


def test_http_image_urls_only_with_the_flag_and_address_check(
    serve_app: Any, image_server: str, tiny_predictor: Any
) -> None:
    with serving_in_thread(serve_app(allow_image_urls=True)) as base:
        client = client_for(base)
        with pytest.raises(openai.BadRequestError, match="non-public address") as caught:
            client.chat.completions.create(model="tiny-test", messages=user_message(image_server))
        assert "--allow-private-hosts" not in str(caught.value)  # prepare's flag, not the client's
    app = serve_app(allow_image_urls=True, allow_private_image_hosts=True)
    with serving_in_thread(app) as base:
        completion = client_for(base).chat.completions.create(
            model="tiny-test", messages=user_message(image_server), max_tokens=6
        )
    expected = direct_answer(tiny_predictor, png_bytes((120, 60, 30)), QUESTION, 6)
    assert completion.choices[0].message.content == expected


@pytest.mark.slow
def test_the_real_command_serves_the_chat_api(tiny_phi3v_dir: Path, image_server: str) -> None:
    """`vistune serve --allow-image-urls` in its own process: the production wiring."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "vistune.cli", "serve", str(tiny_phi3v_dir), "--port"]
    command += [str(port), "--token", TOKEN, "--allow-image-urls", "--set", "max_new_tokens=6"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "vistune serve did not come up"
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        client = client_for(url)
        (model,) = [m.id for m in client.models.list().data]
        assert model == str(tiny_phi3v_dir)
        completion = client.chat.completions.create(
            model=model, messages=user_message(data_url(png_bytes((9, 99, 199))))
        )
        assert isinstance(completion.choices[0].message.content, str)
        assert completion.usage.completion_tokens <= 6  # the run's answer length by default
        # the flag lets URLs through the address check, which refuses this loopback server
        with pytest.raises(openai.BadRequestError, match="non-public address"):
            client.chat.completions.create(model=model, messages=user_message(image_server))
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=60)[1]
    assert "/v1/chat/completions" in stderr  # the startup line names the endpoint


def test_chat_answers_503_with_retry_after_when_the_queue_is_full(tiny_predictor: Any) -> None:
    """The chat route shares /v1/predict's limits: a full queue gives 503 with Retry-After
    (never 500), in the OpenAI error shape."""
    from vistune.serve.app import create_app
    from vistune.serve.config import ServeConfig
    from vistune.serve.server import serving_in_thread

    config = ServeConfig(model="tiny-test", max_batch_size=1, max_wait_ms=0, max_queue=1)
    app = create_app(tiny_predictor, config)
    body = {"model": "tiny-test", "messages": user_message(data_url(png_bytes((9, 9, 9)))),
            "max_tokens": 4}  # fmt: skip
    with serving_in_thread(app) as base:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=300) as http:
                return await asyncio.gather(
                    *(http.post("/v1/chat/completions", json=body) for _ in range(10))
                )

        responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    for response in (r for r in responses if r.status_code == 503):
        assert response.headers["retry-after"]
        assert response.json()["error"]["type"] == "service_unavailable"
