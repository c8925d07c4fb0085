"""`vistune predict`: answer for image files, one result per file, bad files reported per file.

Each file is read with a byte cap and validated by `vistune.data.images.open_checked_image`
(full decode, decompression-bomb and pixel limits, EXIF orientation, RGB), the same checks
`prepare` applies to training images. A file that fails gets an error naming the file and
the reason; the other files are still answered, in batches through the model's `generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import Field

from vistune.answer import parse_answer, template_spec
from vistune.config import VistuneConfig
from vistune.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    atomic_write_bytes,
    open_checked_image,
)
from vistune.device import Device, Precision
from vistune.errors import ImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


class PredictConfig(VistuneConfig):
    """What `vistune predict` needs. None means "the run's value, else the default"."""

    model: str
    images: list[Path] = Field(min_length=1)
    batch_size: int = Field(8, ge=1)
    question: str | None = None
    answer_template: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    num_crops: int | None = Field(None, ge=1)
    precision: Precision = "auto"
    device: Device = "auto"
    max_image_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    json_lines: bool = False
    out: Path | None = Field(None, description="Also write one JSON record per input here.")


@dataclass(frozen=True)
class ImagePrediction:
    """The answer for one file, or why there is none.

    `error` is set when the file could not be used (`raw` is None then) or when the answer
    did not parse (`raw` holds it; title, category and price are None, never 0).
    """

    path: str
    title: str | None
    category: str | None
    full_price: float | None
    raw: str | None
    error: str | None

    @property
    def file_failed(self) -> bool:
        return self.raw is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_line(self) -> str:
        if self.file_failed:
            return f"{self.path}: error: {self.error}"
        if self.error is not None:
            return f"{self.path}: unparsed answer ({self.error}); raw: {self.raw!r}"
        return (
            f"{self.path}: title: {self.title} | category: {self.category} | "
            f"full_price: {self.full_price:.2f} | raw: {self.raw!r}"
        )


def write_json_lines(results: Sequence[ImagePrediction], path: Path) -> None:
    """One JSON object per input, in input order, written atomically (all lines or none).

    Each record has the keys of `--json`: path, title, category, full_price, raw (the model's
    answer, null when the file could not be used) and error (why the file failed or why the
    answer did not parse, else null).
    """
    import json

    lines = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in results)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lines.encode("utf-8"))


def load_image_file(path: Path, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Read and validate one image file; ImageError naming the file and the reason."""
    try:
        return _read_checked_image(path, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def _read_checked_image(path: Path, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """The image in `path`, or ImageError with the reason (the caller names the file)."""
    try:
        if not path.exists():
            raise ImageError("no such file", kind="unreadable")
        if not path.is_file():
            raise ImageError("not a file", kind="unreadable")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(
                f"file is {size:,} bytes, over the limit of {max_bytes:,} "
                "(raise max_image_bytes if it is genuine)",
                kind="too_large",
            )
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:  # unreadable (permissions, a folder that vanished, EIO)
        reason = exc.strerror or exc
        raise ImageError(f"cannot read the file ({reason})", kind="unreadable") from exc
    if len(data) > max_bytes:  # grew while we looked
        raise ImageError(f"file is over the limit of {max_bytes:,} bytes", kind="too_large")
    return open_checked_image(data, max_side=DEFAULT_MAX_SIDE, max_pixels=max_pixels)


def predict_images(
    vlm: Any,
    paths: Sequence[Path],
    *,
    question: str,
    template: str,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    max_image_bytes: int = DEFAULT_MAX_BYTES,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[ImagePrediction]:
    """One `ImagePrediction` per path, in order; unusable files do not stop the others."""
    template_spec(template)
    loaded: list[tuple[int, Image.Image]] = []
    results: list[ImagePrediction | None] = [None] * len(paths)
    for index, path in enumerate(paths):
        try:
            image = _read_checked_image(
                Path(path), max_bytes=max_image_bytes, max_pixels=max_image_pixels
            )
            loaded.append((index, image))
        except ImageError as exc:
            results[index] = ImagePrediction(str(path), None, None, None, None, str(exc))
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        answers = vlm.generate(
            [image for _, image in chunk], [question] * len(chunk), max_new_tokens=max_new_tokens
        )
        for (index, _), raw in zip(chunk, answers, strict=True):
            parsed = parse_answer(raw, template)
            results[index] = ImagePrediction(
                path=str(paths[index]),
                title=parsed.title,
                category=parsed.category,
                full_price=parsed.price,
                raw=raw,
                error=parsed.error,
            )
    return [r for r in results if r is not None]


def run_predict(config: PredictConfig) -> list[ImagePrediction]:
    """Load the model named by `config` (with its run's prompt settings) and predict."""
    from vistune.device import model_load_args
    from vistune.evaluation.runner import prompt_settings_of
    from vistune.models.families import load_vlm

    settings = prompt_settings_of(config)
    vlm = load_vlm(
        config.model,
        num_crops=settings["num_crops"],
        **model_load_args(config.device, config.precision),
    )
    vlm.model.eval()
    return predict_images(
        vlm,
        config.images,
        question=settings["question"],
        template=settings["answer_template"],
        batch_size=config.batch_size,
        max_new_tokens=settings["max_new_tokens"],
        max_image_bytes=config.max_image_bytes,
        max_image_pixels=config.max_image_pixels,
    )
