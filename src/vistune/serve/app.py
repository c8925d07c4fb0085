"""The FastAPI application: upload page, health, and batched predictions.

`create_app` takes any `run_batch(images) -> predictions` callable (a `Predictor` around a
loaded model in production), so the HTTP layer is independent of how the model is loaded.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import PurePath
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from vistune import __version__
from vistune.serve.batcher import BatcherClosedError, BatcherFullError, MicroBatcher
from vistune.serve.config import ServeConfig
from vistune.serve.openai_api import (
    Generation,
    GenerationRequest,
    chat_runner_for,
    max_request_bytes,
    mixed_runner,
    openai_router,
)
from vistune.serve.page import INDEX_HTML
from vistune.serve.predictor import Prediction
from vistune.serve.uploads import (
    BodySizeLimit,
    UploadRejectedError,
    decode_image,
)

#: Form field that carries the image (any single file field is accepted too).
IMAGE_FIELD = "image"


#: Seconds a client is told to wait (Retry-After) when the server is busy or restarting.
RETRY_AFTER_S = 5

log = logging.getLogger("vistune.serve")


def unavailable(detail: str, retry_after_s: int = RETRY_AFTER_S) -> HTTPException:
    """503 with Retry-After: busy or shutting down, never a 500."""
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after_s)})


def create_app(
    run_batch: Callable[[list[Image.Image]], Sequence[Prediction]],
    config: ServeConfig,
    *,
    model_name: str | None = None,
    run_chat: Callable[[list[GenerationRequest]], Sequence[Generation]] | None = None,
) -> FastAPI:
    """Build the app; the micro-batcher starts with the server and drains on shutdown.

    `app.state.begin_drain()` is shutdown step 1 (the server calls it on SIGTERM): new
    requests get 503 + Retry-After, queued ones run for `shutdown_grace_s`, then the rest get
    503 too. `app.state.require_token` and `decode_upload` are what other endpoints reuse.
    The OpenAI chat endpoints are served when `run_chat` is given or `run_batch` is a
    Predictor; one batcher runs both kinds of request.
    """
    run_chat = run_chat or chat_runner_for(run_batch)
    batcher: MicroBatcher[Any, Any] = MicroBatcher(
        mixed_runner(run_batch, run_chat) if run_chat else run_batch,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
    )
    token = config.token.get_secret_value().encode() if config.token is not None else None
    decode_slots = asyncio.Semaphore(config.max_concurrent_decodes)
    waiting_decodes = 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # every accepted request still gets its answer

    docs = {} if token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="vistune", version=__version__, lifespan=lifespan, **docs)
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes(config))

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)

    def require_token(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def begin_drain() -> None:
        batcher.begin_drain(config.shutdown_grace_s)

    async def decode_upload(data: bytes) -> Image.Image:
        """Decode an upload through the image gate with at most `max_concurrent_decodes`
        running at once (a 6000x6000 upload needs ~100 MB while decoding); 503 when too many
        are waiting, 4xx for anything that is not a usable image."""
        nonlocal waiting_decodes
        if decode_slots.locked() and waiting_decodes >= config.max_queue:
            raise unavailable(
                f"the server is busy ({waiting_decodes} uploads are waiting to be decoded); "
                "retry later"
            )
        waiting_decodes += 1
        try:
            await decode_slots.acquire()
        finally:
            waiting_decodes -= 1
        try:  # decoding is CPU work: keep it off the event loop
            return await asyncio.to_thread(decode_image, data, max_pixels=config.max_image_pixels)
        except UploadRejectedError as exc:
            raise HTTPException(exc.status_code, exc.detail) from exc
        finally:
            decode_slots.release()

    app.state.require_token = require_token
    app.state.decode_upload = decode_upload
    app.state.begin_drain = begin_drain
    app.state.shutdown_grace_s = config.shutdown_grace_s

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "client"
        log.info("%s disconnected during %s %s", client, request.method, request.url.path)
        return Response(status_code=400)  # nobody reads it; keeps uvicorn from logging a trace

    if token is not None:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> dict[str, Any]:
            require_token(request)
            return app.openapi()

        @app.get("/docs", include_in_schema=False)
        async def swagger(request: Request) -> HTMLResponse:
            require_token(request)
            return get_swagger_ui_html(openapi_url="/openapi.json", title="vistune")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX_HTML

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness for anyone. Load figures for callers the server trusts (with the token,
        or everyone when none is set); the model's filesystem path only with the token, so
        an open server never tells strangers where its files live."""
        status = "draining" if batcher.draining else "ok"
        public: dict[str, Any] = {"status": status, "auth_required": token is not None}
        if not authorized(request):
            return public
        model = model_name or config.model
        return {
            **public,
            "model": model if token is not None else PurePath(model).name,
            "max_batch_size": config.max_batch_size,
            "max_wait_ms": config.max_wait_ms,
            "max_upload_mb": config.max_upload_mb,
            "max_queue": config.max_queue,
            "pending": batcher.pending,
            "batching": batcher.stats.as_dict(),
        }

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """Multipart upload with one image (field `image`) -> parsed answer and latency."""
        started = time.perf_counter()
        require_token(request)  # before a byte of the body is read
        if batcher.draining:
            raise unavailable("the server is shutting down")
        data = await read_image_field(request, config.max_upload_bytes)
        image = await decode_upload(data)
        try:
            prediction = await batcher.submit(image)
        except BatcherClosedError as exc:
            raise unavailable("the server is shutting down") from exc
        except BatcherFullError as exc:
            raise unavailable(f"the server is busy ({exc}); retry later") from exc
        return {
            **prediction.as_dict(),
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }

    if run_chat is not None:
        served = model_name or config.model
        app.include_router(
            openai_router(
                batcher,
                config,
                model_name=served,
                authorize=require_token,
                decode=decode_upload,
                unavailable=unavailable,
            )
        )
    return app


async def read_image_field(request: Request, max_bytes: int) -> bytes:
    """The bytes of the single uploaded file; 400/413/415 for anything else."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(
            415, f"send the image as multipart/form-data in a field named {IMAGE_FIELD!r}"
        )
    try:
        form = await request.form(max_files=1, max_fields=8)
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from exc
    try:
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise HTTPException(400, f"no file in the upload; send it in field {IMAGE_FIELD!r}")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"image larger than the limit of {max_bytes:,} bytes")
        return data
    finally:
        await form.close()
