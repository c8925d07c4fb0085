"""Validate and normalise one image, and store it by content hash.

Every image that enters a dataset dir is fully decoded (a truncated file fails here, not in
the middle of training), checked against a pixel budget (a decompression bomb is an error,
not a warning), turned upright from its EXIF orientation, converted to RGB (transparency
flattened on white) and shrunk so its longest side is at most `max_side`.

When none of that changes anything and the file is a JPEG or PNG, the original bytes are
kept (no second lossy encode); otherwise the result is re-encoded (PNG for lossless
sources, JPEG quality 95 for the rest). The stored name is the sha256 of the stored bytes,
so identical images are stored once and every row that shows them points at that file.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from vistune.errors import ImageError

DEFAULT_MAX_SIDE: Final = 1344
#: Pillow's own decompression-bomb threshold (it only warns below 2x this); we refuse above it.
DEFAULT_MAX_PIXELS: Final = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
ALLOWED_FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})
LOSSLESS_FORMATS: Final = frozenset({"PNG", "GIF", "BMP", "TIFF"})
PASSTHROUGH: Final = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass(frozen=True)
class NormalisedImage:
    """Bytes ready to store, and what they hold."""

    data: bytes
    suffix: str  # ".jpg" or ".png"
    sha256: str
    width: int
    height: int

    @property
    def filename(self) -> str:
        return f"{self.sha256}{self.suffix}"


@dataclass(frozen=True)
class _Decoded:
    image: Image.Image  # fully loaded, upright, RGB, longest side capped
    fmt: str
    changed: bool  # False when the file's own bytes already are that image


@contextmanager
def decoder_failures_as_image_errors(what: str = "image") -> Iterator[None]:
    """The gate's core: any exception a decoder raises becomes an `ImageError`.

    Pillow's decoders raise `OSError`, `SyntaxError`, `ValueError`, `TypeError`,
    `struct.error`, `IndexError`, `EOFError`... on hostile bytes, and which one depends on the
    format and the Pillow version. Listing types lets the next one crash a run, so the gate
    catches `Exception`; errors that are not about the bytes (KeyboardInterrupt, SystemExit)
    are `BaseException`s and pass.
    """
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}", kind="too_large") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{what} is not an image Pillow can read", kind="not_image") from exc
    except Exception as exc:
        raise ImageError(
            f"cannot decode {what} ({type(exc).__name__}: {exc})", kind="corrupt"
        ) from exc


def open_checked_image(
    data: bytes,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """The one image-decoding gate: bytes -> loaded upright RGB image, or `ImageError`.

    `prepare` (through `normalise_image`), dataset loading, `predict` and `serve` all decode
    through here, so a file that fails fails the same way everywhere and no decoder
    exception of any type reaches a caller. `max_side=None` keeps the size (dataset images
    were capped when they were prepared).
    """
    with decoder_failures_as_image_errors():
        return _decode(data, max_side=max_side, max_pixels=max_pixels).image


def check_image_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Format and pixel count from the header alone (no pixel decoded); `ImageError` else."""
    with decoder_failures_as_image_errors(), _open_header(data, max_pixels=max_pixels) as opened:
        return opened.size


def normalise_image(
    data: bytes,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NormalisedImage:
    """Decode, check and normalise image bytes; raise `ImageError` saying what is wrong."""
    with decoder_failures_as_image_errors():
        decoded = _decode(data, max_side=max_side, max_pixels=max_pixels)
        if not decoded.changed and decoded.fmt in PASSTHROUGH:
            stored, suffix = data, PASSTHROUGH[decoded.fmt]
        else:
            stored, suffix = _encode(decoded.image, lossless=decoded.fmt in LOSSLESS_FORMATS)
        return NormalisedImage(
            data=stored,
            suffix=suffix,
            sha256=hashlib.sha256(stored).hexdigest(),
            width=decoded.image.width,
            height=decoded.image.height,
        )


def _open_header(data: bytes, *, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("empty file (0 bytes)", kind="empty")
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"not an image Pillow can read ({_describe(data)})", kind="not_image"
        ) from exc
    fmt = opened.format or "unknown"
    width, height = opened.size
    if fmt not in ALLOWED_FORMATS:
        opened.close()
        raise ImageError(
            f"image format {fmt} is not accepted ({sorted(ALLOWED_FORMATS)})", kind="format"
        )
    if width * height > max_pixels:
        opened.close()
        raise ImageError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels} (raise max_image_pixels if it is genuine)",
            kind="too_large",
        )
    return opened


def _decode(data: bytes, *, max_side: int | None, max_pixels: int) -> _Decoded:
    with _open_header(data, max_pixels=max_pixels) as opened:
        fmt = opened.format or "unknown"
        opened.load()  # full decode: a truncated file raises here
        image: Image.Image = opened
        changed = False
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
            changed = True
        if image.mode != "RGB":
            image = _to_rgb(image)
            changed = True
        if max_side is not None and max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            changed = True
        if image is opened:
            image = opened.copy()  # outlive the `with`, which closes the file's image
        return _Decoded(image, fmt, changed)


def store_image(image: NormalisedImage, images_dir: Path) -> str:
    """Write `image` under `images_dir` by content hash (atomically); return its file name.

    An existing file with that name already holds these exact bytes, so it is left alone:
    that is the deduplication.
    """
    target = images_dir / image.filename
    if not target.exists():
        atomic_write_bytes(target, image.data)
    return image.filename


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so a kill never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as handle:  # normal permissions (umask), unlike mkstemp's 0600
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _encode(image: Image.Image, *, lossless: bool) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, format="PNG", optimize=False)
        return buffer.getvalue(), ".png"
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue(), ".jpg"


def _describe(data: bytes) -> str:
    """What the bytes look like, without quoting them: an error message ends up in
    `dropped.jsonl` and HTTP answers, and a file's bytes may be a secret."""
    head = data[:16]
    if head.lstrip().startswith((b"<", b"{")):
        return f"{len(data)} bytes that look like HTML/JSON text"
    return f"{len(data)} bytes with no known image signature"
