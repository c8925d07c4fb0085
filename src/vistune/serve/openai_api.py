"""The OpenAI chat API on `vistune serve`: `POST /v1/chat/completions`, `GET /v1/models`.

Clients that speak the OpenAI API (the `openai` package, LangChain, LlamaIndex, Open WebUI,
curl) send one user message with a product photo as an `image_url` part and get the model's
answer as the message content, plus a `vistune` object with the parsed title, category and
price (or why the answer did not parse).

Needs the `serve` extra (FastAPI). What this endpoint does and does not do:
- one user message, with at most one image (a `data:` URL; `http(s)` URLs only when the
  server runs with `allow_image_urls`, fetched by `vistune.data.download`, the downloader
  `prepare` uses, which refuses private and loopback addresses); other roles and multi-turn
  conversations get a 400, as they cannot be answered the way the model was trained;
- the text of the message is the question; a message with only an image is asked the
  question the run was trained with;
- decoding is greedy whatever `temperature` says (vistune's generation is greedy); the
  response says so in `vistune.decoding`;
- requests go through the same micro-batcher as `/v1/predict`: a batch may mix both;
- `stream=true` answers as server-sent events in the OpenAI chunk format once the batch has
  generated the answer (the batcher produces whole answers, so streaming changes the wire
  format, not the time to the first token);
- `usage.prompt_tokens` is the prompt the model saw (image tokens included);
  `completion_tokens` counts the answer's tokens by re-tokenizing its text.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vistune.serve.batcher import BatcherClosedError, BatcherFullError, MicroBatcher
from vistune.serve.config import ServeConfig
from vistune.serve.predictor import Prediction, Predictor, to_prediction
from vistune.serve.uploads import MULTIPART_OVERHEAD

#: Longest answer a client may ask for.
MAX_COMPLETION_TOKENS = 4096


# -- what the micro-batcher runs ----------------------------------------------------------------
@dataclass(frozen=True)
class GenerationRequest:
    """One chat request for the batcher; None means the served default."""

    image: Image.Image | None
    question: str | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Generation:
    """The answer to a GenerationRequest, with token counts for `usage`."""

    prediction: Prediction
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int

    @property
    def finish_reason(self) -> str:
        return "length" if self.completion_tokens >= self.max_new_tokens else "stop"


def generate_requests(
    predictor: Predictor, requests: Sequence[GenerationRequest]
) -> list[Generation]:
    """Answer chat requests: one `generate` call per distinct answer length in the batch."""
    vlm = predictor.vlm
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    questions = [r.question or predictor.question for r in requests]
    lengths = [r.max_new_tokens or predictor.max_new_tokens for r in requests]
    images = [r.image for r in requests]
    prompt_tokens = vlm.collate(images, questions)["attention_mask"].sum(dim=1).tolist()
    out: list[Generation | None] = [None] * len(requests)
    for length in sorted(set(lengths)):
        rows = [i for i, n in enumerate(lengths) if n == length]
        raws = vlm.generate([images[i] for i in rows], [questions[i] for i in rows], length)
        for i, raw in zip(rows, raws, strict=True):
            completion = len(tokenizer(raw, add_special_tokens=False)["input_ids"]) if raw else 0
            out[i] = Generation(
                prediction=to_prediction(raw, predictor.answer_template),
                prompt_tokens=int(prompt_tokens[i]),
                completion_tokens=min(completion, length),
                max_new_tokens=length,
            )
    return [g for g in out if g is not None]


def mixed_runner(
    run_batch: Callable[[list[Image.Image]], Sequence[Prediction]],
    run_requests: Callable[[list[GenerationRequest]], Sequence[Generation]],
) -> Callable[[list[Any]], list[Any]]:
    """One batch function for both endpoints: images (`/v1/predict`) and chat requests.

    A batch of images only runs `run_batch` as before; a batch with any chat request runs
    every item through `run_requests` (an image becomes a request with the defaults) in one
    pass, and each image gets back the Prediction it would have got.
    """

    def run(items: list[Any]) -> list[Any]:
        if not any(isinstance(item, GenerationRequest) for item in items):
            return list(run_batch(items))
        requests = [i if isinstance(i, GenerationRequest) else GenerationRequest(i) for i in items]
        generations = run_requests(requests)
        return [
            g if isinstance(item, GenerationRequest) else g.prediction
            for item, g in zip(items, generations, strict=True)
        ]

    return run


def chat_runner_for(run_batch: Any) -> Callable[[list[GenerationRequest]], list[Generation]] | None:
    """The chat batch function for a Predictor (None for other callables, e.g. test fakes)."""
    if isinstance(run_batch, Predictor):
        return lambda requests: generate_requests(run_batch, requests)
    return None


def max_request_bytes(config: ServeConfig) -> int:
    """Body cap: an image of `max_upload_bytes` sent as base64 (4/3 larger) plus JSON/headers."""
    return -(-config.max_upload_bytes // 3) * 4 + MULTIPART_OVERHEAD


# -- the request body -----------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields vistune does not use


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Lenient):
    role: str
    content: str | list[Part] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatError(Exception):
    """A request the endpoint refuses, answered in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers

    @classmethod
    def from_http(cls, exc: HTTPException) -> ChatError:
        """The shared upload decoder's and the server's HTTP refusals, in the OpenAI shape."""
        return cls(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None)


def error_response(error: ChatError) -> JSONResponse:
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        413: "request_too_large",
        503: "service_unavailable",
    }
    return JSONResponse(
        status_code=error.status,
        headers=error.headers,
        content={
            "error": {
                "message": error.message,
                "type": kind.get(error.status, "invalid_request_error"),
                "param": error.param,
                "code": None,
            },
            "detail": error.message,  # the field /v1/predict errors use
        },
    )


def parse_request(payload: Any) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ChatError(400, f"{where}: {first['msg']}", param=where) from exc


def question_and_image_url(request: ChatCompletionRequest) -> tuple[str | None, str | None]:
    """The user's text (None when empty) and the one image URL (None when none)."""
    roles = [m.role for m in request.messages]
    if roles != ["user"]:
        raise ChatError(
            400,
            f"messages have roles {roles}: vistune answers one user message (its text and at "
            "most one image), as the model was trained; send only that message",
            param="messages",
        )
    content = request.messages[0].content
    if isinstance(content, str) or content is None:
        return (content or "").strip() or None, None
    texts = [p.text for p in content if isinstance(p, TextPart)]
    urls = [p.image_url.url for p in content if isinstance(p, ImagePart)]
    if len(urls) > 1:
        raise ChatError(400, f"{len(urls)} images in the message; send one", param="messages")
    return "\n".join(texts).strip() or None, (urls[0] if urls else None)


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URL; 400/413 when malformed or too large."""
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ChatError(400, "image_url: a data: URL must be data:<type>;base64,<data>")
    if len(data) > -(-max_bytes // 3) * 4 + 4:
        raise ChatError(413, f"image larger than the limit of {max_bytes:,} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChatError(400, f"image_url: the data: URL is not valid base64 ({exc})") from exc
    if len(raw) > max_bytes:
        raise ChatError(413, f"image larger than the limit of {max_bytes:,} bytes")
    return raw


async def fetch_image_url(url: str, config: ServeConfig) -> bytes:
    """GET an http(s) image with prepare's downloader: address-checked, capped, no retries."""
    from vistune.data.download import DownloadOptions, FetchError, fetch_bytes, make_client

    options = DownloadOptions(
        concurrency=1,
        timeout_s=config.image_url_timeout_s,
        retries=0,
        max_bytes=config.max_upload_bytes,
        allow_private_hosts=config.allow_private_image_hosts,
    )
    async with make_client(options, 1) as client:
        try:
            return await fetch_bytes(client, url, options)
        except FetchError as exc:
            # prepare's hint names its own CLI flag; a chat client cannot act on it
            detail = exc.detail.split("; pass --allow-private-hosts", 1)[0]
            raise ChatError(400, f"image_url: {detail}", param="messages") from exc


async def load_image(
    url: str, config: ServeConfig, decode: Callable[[bytes], Awaitable[Image.Image]]
) -> Image.Image:
    if url.startswith("data:"):
        data = decode_data_url(url, config.max_upload_bytes)
    elif url.startswith(("http://", "https://")):
        if not config.allow_image_urls:
            raise ChatError(
                400,
                "image_url: this server accepts images as data: URLs only; start it with "
                "--allow-image-urls to let it fetch http(s) URLs",
            )
        data = await fetch_image_url(url, config)
    else:
        raise ChatError(400, "image_url: send a data:image/...;base64,... URL")
    try:  # the server's bounded decoder: same gate, limits and 4xx/503 answers as uploads
        return await decode(data)
    except HTTPException as exc:
        raise ChatError.from_http(exc) from exc


# -- responses ----------------------------------------------------------------------------------
def vistune_fields(generation: Generation, started: float) -> dict[str, Any]:
    prediction = generation.prediction
    return {
        "title": prediction.title,
        "category": prediction.category,
        "full_price": prediction.full_price,
        "error": prediction.error,
        "decoding": "greedy",
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }


def usage_of(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


def completion_body(
    generation: Generation, model: str, completion_id: str, created: int, started: float
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.prediction.raw},
                "logprobs": None,
                "finish_reason": generation.finish_reason,
            }
        ],
        "usage": usage_of(generation),
        "vistune": vistune_fields(generation, started),
    }


def stream_events(
    generation: Generation,
    model: str,
    completion_id: str,
    created: int,
    started: float,
    include_usage: bool,
) -> list[str]:
    """The SSE events of one answer: role, content, finish (+ vistune), usage, [DONE]."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [
        chunk(choice({"role": "assistant", "content": ""})),
        chunk(choice({"content": generation.prediction.raw})),
        chunk(choice({}, generation.finish_reason), vistune=vistune_fields(generation, started)),
    ]
    if include_usage:
        events.append(chunk([], usage=usage_of(generation)))
    events.append("data: [DONE]\n\n")
    return events


def openai_router(
    batcher: MicroBatcher[Any, Any],
    config: ServeConfig,
    *,
    model_name: str,
    authorize: Callable[[Request], None],
    decode: Callable[[bytes], Awaitable[Image.Image]],
    unavailable: Callable[[str], HTTPException],
) -> APIRouter:
    """The APIRouter with /v1/models and /v1/chat/completions (bearer token via `authorize`,
    images through the server's bounded `decode`, 503 + Retry-After via `unavailable`)."""
    router = APIRouter()
    started_at = int(time.time())

    @router.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "object": "list",
            "data": [
                {"id": model_name, "object": "model", "created": started_at, "owned_by": "vistune"}
            ],
        }

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        started = time.perf_counter()
        authorize(request)  # before a byte of the body is read
        try:
            try:
                payload = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ChatError(400, f"the body is not JSON ({exc})") from exc
            chat = parse_request(payload)
            if chat.model != model_name:
                raise ChatError(
                    404, f"model {chat.model!r} is not served here; use {model_name!r}", "model"
                )
            if batcher.draining:
                raise ChatError.from_http(unavailable("the server is shutting down"))
            question, url = question_and_image_url(chat)
            image = await load_image(url, config, decode) if url is not None else None
            max_tokens = chat.max_completion_tokens or chat.max_tokens
            try:
                generation = await batcher.submit(GenerationRequest(image, question, max_tokens))
            except BatcherClosedError as exc:
                raise ChatError.from_http(unavailable("the server is shutting down")) from exc
            except BatcherFullError as exc:
                raise ChatError.from_http(
                    unavailable(f"the server is busy ({exc}); retry later")
                ) from exc
        except ChatError as error:
            return error_response(error)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not chat.stream:
            return completion_body(generation, model_name, completion_id, created, started)
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        events = stream_events(
            generation, model_name, completion_id, created, started, include_usage
        )

        async def body() -> AsyncIterator[str]:
            for event in events:
                yield event

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return router


__all__ = [
    "ChatCompletionRequest",
    "Generation",
    "GenerationRequest",
    "chat_runner_for",
    "generate_requests",
    "max_request_bytes",
    "mixed_runner",
    "openai_router",
]
