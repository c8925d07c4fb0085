"""The FastAPI application: upload page, health, and batched predictions.

`create_app` takes any `run_batch(images) -> predictions` callable (a `Predictor` around a
loaded model in production), so the HTTP layer is independent of how the model is loaded.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from vistune import __version__
from vistune.serve.batcher import BatcherClosedError, MicroBatcher
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


def create_app(
    run_batch: Callable[[list[Image.Image]], Sequence[Prediction]],
    config: ServeConfig,
    *,
    model_name: str | None = None,
    run_chat: Callable[[list[GenerationRequest]], Sequence[Generation]] | None = None,
) -> FastAPI:
    """Build the app; the micro-batcher starts with the server and drains on shutdown.

    The OpenAI chat endpoints are served when `run_chat` is given or `run_batch` is a
    Predictor; one batcher runs both kinds of request.
    """
    run_chat = run_chat or chat_runner_for(run_batch)
    batcher: MicroBatcher[Any, Any] = MicroBatcher(
        mixed_runner(run_batch, run_chat) if run_chat else run_batch,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
    )
    token = config.token.get_secret_value().encode() if config.token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # every accepted request still gets its answer

    app = FastAPI(title="vistune", version=__version__, lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes(config))

    def require_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX_HTML

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name or config.model,
            "auth_required": token is not None,
            "max_batch_size": config.max_batch_size,
            "max_wait_ms": config.max_wait_ms,
            "max_upload_mb": config.max_upload_mb,
            "pending": batcher.pending,
            "batching": batcher.stats.as_dict(),
        }

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """Multipart upload with one image (field `image`) -> parsed answer and latency."""
        started = time.perf_counter()
        require_token(request)  # before a byte of the body is read
        data = await read_image_field(request, config.max_upload_bytes)
        try:  # decoding is CPU work: keep it off the event loop
            image = await asyncio.to_thread(decode_image, data, max_pixels=config.max_image_pixels)
        except UploadRejectedError as exc:
            raise HTTPException(exc.status_code, exc.detail) from exc
        try:
            prediction = await batcher.submit(image)
        except BatcherClosedError as exc:
            raise HTTPException(503, "the server is shutting down") from exc
        return {
            **prediction.as_dict(),
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }

    if run_chat is not None:
        served = model_name or config.model
        app.include_router(
            openai_router(batcher, config, model_name=served, authorize=require_token)
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
