"""Read a prepared dataset dir: what training, evaluation and serving call.

A dataset dir (written by `vistune prepare`) holds `{train,validation,test}.parquet`,
whose `image` column is a path relative to the dir, and `images/`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from vistune.data import schema
from vistune.data.images import DEFAULT_MAX_PIXELS, check_image_header, open_checked_image
from vistune.errors import DataError, ImageError

#: Prepared images are capped in pixels and re-encoded; anything this big was not written by
#: `prepare`.
MAX_DATASET_IMAGE_BYTES = 64 * 2**20


def load_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    """The rows of one split; a `DataError` names the missing file and the splits that exist."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        existing = sorted(p.stem for p in data_dir.glob("*.parquet")) if data_dir.is_dir() else []
        where = f"splits here: {', '.join(existing)}" if existing else "no splits here"
        hint = "" if existing else " (run `vistune prepare SOURCE --out DIR` first)"
        raise DataError(f"{path}: split {split!r} not found; {where}{hint}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... on garbage
        raise DataError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc}); "
            "prepare the dataset again"
        ) from exc
    missing = [c for c in schema.CANONICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; was it written by `vistune prepare`?")
    return frame


def open_image(
    data_dir: str | Path, relpath: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open a dataset image as a loaded RGB PIL image; `ImageError` names the file.

    The file goes through the same gate as at `prepare` time (a file replaced after
    preparing, a decompression bomb or garbage, fails here with one clear error). The path
    must stay inside the dataset dir: a tampered parquet cannot point training at
    `/etc/shadow` or `../../secret.png`.
    """
    path = _confined(Path(data_dir), relpath)
    data = _read_capped(path)
    try:
        return open_checked_image(data, max_side=None, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}; prepare the dataset again", kind=exc.kind) from exc


def probe_images(
    data_dir: str | Path, relpaths: list[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Check every distinct image's header (format, pixel count) before a long run starts.

    Costs a header read per file, so a bomb or a garbage file in a dataset dir stops
    `train` at once with one line, instead of inside a DataLoader worker hours later.
    """
    root = Path(data_dir)
    for relpath in dict.fromkeys(relpaths):
        path = _confined(root, relpath)
        try:
            check_image_header(_read_capped(path), max_pixels=max_pixels)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}; prepare the dataset again", kind=exc.kind) from exc


def _confined(root: Path, relpath: str) -> Path:
    path = root / relpath
    if not path.resolve().is_relative_to(root.resolve()):
        raise ImageError(
            f"{path}: image path leaves the dataset dir {root}; the dataset was not written "
            "by `vistune prepare` or was edited",
            kind="unreadable",
        )
    return path


def _read_capped(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_DATASET_IMAGE_BYTES:
            raise ImageError(
                f"{path}: {size:,} bytes, over the limit of {MAX_DATASET_IMAGE_BYTES:,}",
                kind="too_large",
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(
            f"{path}: image file not found (dataset dir incomplete?)", kind="unreadable"
        ) from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc})", kind="unreadable") from exc
