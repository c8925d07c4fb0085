"""Read any supported source into one table with its original columns.

A source is a CSV/TSV/Parquet/JSONL file, a folder written by `vistune sample`
(`catalog.parquet` + `images/`), an image folder (one subfolder per category, optional
`metadata.csv`/`metadata.jsonl` with a `file_name` column, as in the Hugging Face
imagefolder convention) or a hub dataset id (loaded with `datasets`, which reads its local
cache when offline; all splits are concatenated and the original split kept in
`source_split`). Row i of the returned frame is source row i: that number is what
`dropped.jsonl` and the `source_row` column report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd

from vistune.data import schema
from vistune.errors import DataError

TABLE_SUFFIXES: Final = (".csv", ".tsv", ".parquet", ".jsonl", ".json", ".ndjson")
IMAGE_SUFFIXES: Final = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
SAMPLE_FILES: Final = ("catalog.parquet", "catalog.csv", "catalog.jsonl")
METADATA_FILES: Final = ("metadata.csv", "metadata.jsonl")
FOLDER_LABEL: Final = "label"  # column that holds an image folder's subfolder name


@dataclass
class SourceTable:
    """A source's rows with their original columns, and where relative image paths point."""

    frame: pd.DataFrame
    base_dir: Path | None
    kind: str  # "file", "sample", "imagefolder" or "hub"


def read_source(source: str, text_columns: Sequence[str] = (schema.PRODUCT,)) -> SourceTable:
    """Load `source`; `text_columns` are read as text from CSV (product codes keep zeros)."""
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            return _read_folder(path, text_columns)
        return SourceTable(_read_table(path, text_columns), path.parent, "file")
    if _looks_like_path(source):
        raise DataError(
            f"{source}: source not found (expected a CSV/Parquet/JSONL file, a folder from "
            "`vistune sample`, an image folder, or a hub dataset id like owner/name)"
        )
    return SourceTable(_read_hub(source), None, "hub")


def _looks_like_path(source: str) -> bool:
    if source.lower().endswith(TABLE_SUFFIXES) or source.startswith((".", "/", "~")):
        return True
    return source.count("/") > 1 or (os.sep != "/" and os.sep in source)


def _read_table(path: Path, text_columns: Sequence[str]) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            header = pd.read_csv(path, nrows=0, sep="\t" if suffix == ".tsv" else ",")
            dtypes = {c: "string" for c in text_columns if c in header.columns}
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=dtypes)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".json":
            frame = pd.read_json(path, dtype=False)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; use {TABLE_SUFFIXES}")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as {suffix[1:]} ({exc})") from exc
    return _object_text(frame.reset_index(drop=True))


def _object_text(frame: pd.DataFrame) -> pd.DataFrame:
    """pandas "string" columns become plain object columns of str/None (one representation)."""
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.StringDtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _read_folder(root: Path, text_columns: Sequence[str]) -> SourceTable:
    for name in SAMPLE_FILES:
        if (root / name).is_file():
            return SourceTable(_read_table(root / name, text_columns), root, "sample")
    files = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    metadata = next((root / n for n in METADATA_FILES if (root / n).is_file()), None)
    if not files and metadata is None:
        raise DataError(
            f"{root}: folder holds no {SAMPLE_FILES[0]}, no metadata file and no images "
            f"({sorted(IMAGE_SUFFIXES)}); nothing to prepare"
        )
    frame = pd.DataFrame({"file_name": [f.as_posix() for f in files]})
    if metadata is not None:
        meta = _read_table(metadata, text_columns)
        if "file_name" not in meta.columns:
            raise DataError(
                f"{metadata}: needs a file_name column naming each image relative to {root}; "
                f"columns are {list(meta.columns)}"
            )
        meta = meta.assign(file_name=meta["file_name"].map(lambda v: Path(str(v)).as_posix()))
        # Rows listed in the metadata come first, in its order; files it does not list follow.
        # A listed file that is missing stays as a row, and is reported as a missing image.
        unlisted = frame[~frame["file_name"].isin(set(meta["file_name"]))]
        frame = pd.concat([meta, unlisted], ignore_index=True)
    if FOLDER_LABEL not in frame.columns:  # the subfolder is the category, as in imagefolder
        frame[FOLDER_LABEL] = [
            parts[0] if len(parts := Path(name).parts) > 1 else None for name in frame["file_name"]
        ]
    frame = frame.reset_index(drop=True)
    frame[schema.IMAGE] = frame["file_name"]
    return SourceTable(frame, root, "imagefolder")


def _read_hub(source: str) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_dataset(source)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get(
            "HF_HUB_OFFLINE"
        ) in ("1", "true")
        hint = " (offline mode: only datasets already in the local cache load)" if offline else ""
        raise DataError(
            f"{source}: not a local file or folder, and not loadable as a hub dataset{hint}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    parts = []
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    for split, dataset in splits:
        for name, feature in dataset.features.items():
            if isinstance(feature, datasets.Image):  # keep raw bytes: we validate them ourselves
                dataset = dataset.cast_column(name, datasets.Image(decode=False))
        frame = dataset.to_pandas()
        for name, feature in dataset.features.items():
            if isinstance(feature, datasets.ClassLabel):
                frame[name] = [_label_name(feature, v) for v in frame[name]]
        frame["source_split"] = split
        parts.append(frame)
    return _object_text(pd.concat(parts, ignore_index=True))


def _label_name(feature: Any, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value < 0:
        return None
    return feature.int2str(int(value))
