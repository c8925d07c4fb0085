"""Read a prepared dataset dir: what training, evaluation and serving call.

A dataset dir (written by `vistune prepare`) holds `{train,validation,test}.parquet`,
whose `image` column is a path relative to the dir, and `images/`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from vistune.data import schema
from vistune.errors import DataError, ImageError


def load_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    """The rows of one split; a `DataError` names the missing file and the splits that exist."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        existing = sorted(p.stem for p in data_dir.glob("*.parquet")) if data_dir.is_dir() else []
        where = f"splits here: {', '.join(existing)}" if existing else "no splits here"
        hint = "" if existing else " (run `vistune prepare SOURCE --out DIR` first)"
        raise DataError(f"{path}: split {split!r} not found; {where}{hint}")
    frame = pd.read_parquet(path)
    missing = [c for c in schema.CANONICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; was it written by `vistune prepare`?")
    return frame


def open_image(data_dir: str | Path, relpath: str) -> Image.Image:
    """Open a dataset image as a loaded RGB PIL image; `ImageError` names the file."""
    path = Path(data_dir) / relpath
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB") if image.mode != "RGB" else image.copy()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: image file not found (dataset dir incomplete?)") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
