"""Guards on what clients send: a body-size cap enforced while reading, and image decoding.

The cap is enforced twice: a declared `Content-Length` over the limit is refused before a
byte of the body is read, and a body without one (chunked) is cut off as soon as it passes
the limit, so a client can never make the server buffer more than the cap.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import Image

from vistune.data.images import ALLOWED_FORMATS, open_checked_image
from vistune.errors import ImageError

#: Room for multipart boundaries and headers on top of the image itself.
MULTIPART_OVERHEAD = 64 * 1024


class UploadRejectedError(Exception):
    """An upload the server refuses, with the HTTP status that says why."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


#: HTTP status for each kind of `ImageError` the gate raises; anything else is a 400.
STATUS_BY_KIND = {"empty": 400, "not_image": 415, "format": 415, "too_large": 413}


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode an uploaded file into an RGB image, or raise UploadRejectedError (413/415/400).

    The bytes go through `vistune.data.images.open_checked_image`, the gate `prepare`
    applied to the training images (format and pixel count read from the header before any
    pixel is decoded, full decode, EXIF orientation, RGB with transparency on white, longest
    side capped), so the model sees uploads as it saw its training data, and no decoder
    failure of any type can become a 500: a bomb is 413, a non-image 415, the rest 400.
    """
    if not data:
        raise UploadRejectedError(400, "the uploaded file is empty")
    try:
        return open_checked_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        status = STATUS_BY_KIND.get(exc.kind, 400)
        if exc.kind in ("not_image", "format"):
            formats = ", ".join(sorted(ALLOWED_FORMATS))
            detail = f"not an image this server reads ({formats}): {exc}"
        elif status == 413:
            detail = f"image too large: {exc}"
        else:
            detail = f"the image could not be decoded: {exc}"
        raise UploadRejectedError(status, detail) from exc


class _BodyTooLargeError(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: answer 413 to any HTTP request whose body exceeds `max_bytes`."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return

        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLargeError:
            if started:
                raise
            await _send_413(send, self.max_bytes)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Any, max_bytes: int) -> None:
    body = json.dumps(
        {"detail": f"request body larger than the limit of {max_bytes:,} bytes"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
