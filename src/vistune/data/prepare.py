"""`vistune prepare`: turn any catalog source into a validated, leak-free dataset dir.

    source -> rows -> cheap checks -> images -> group-aware splits -> dataset dir
                      (duplicates,       (download or read, validate,
                       title, category,   store by hash; journaled)
                       price)

The dataset dir holds `{train,validation,test}.parquet`, `images/<sha256>.jpg|png`,
`manifest.json`, `dropped.jsonl` and `prepare.yaml`.

Cheap checks run first so no image is fetched for a row that would be dropped anyway.
Every dropped row is counted by reason in the manifest and listed in `dropped.jsonl`
with its source row; nothing disappears silently. Images are processed once per distinct
source (URL, file or embedded bytes), recorded in a journal under `DIR/.cache/`, so a
re-run after an interruption (even kill -9) skips everything already done.

Output is atomic: everything is written into the hidden sibling `.DIR.partial` (started from
the previous dataset's images by hard link) and swapped in as `DIR` only when the run
succeeded, so a failed run leaves the old dataset untouched and a successful one leaves no
file of the old one (images no row uses are deleted). A failed or killed run keeps
`.DIR.partial` with its journal: the next run resumes from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, Field, model_validator

from vistune.config import VistuneConfig
from vistune.data import schema
from vistune.data.download import DownloadOptions, FetchError, fetch_bytes, make_clients
from vistune.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    atomic_write_bytes,
    normalise_image,
    store_image,
)
from vistune.data.journal import ImageJournal
from vistune.data.prices import DEFAULT_MAX_PRICE, PriceError, parse_price
from vistune.data.sources import SourceTable, read_source
from vistune.data.splits import plan_splits
from vistune.errors import DataError, ImageError
from vistune.outputs import (
    check_output_dir,
    link_or_copy_tree,
    staging_path,
    swap_into_place,
)
from vistune.progress import make_progress

IMAGES_DIR = "images"
CACHE_DIR = ".cache"
#: Files that mark a folder as a prepared dataset (which a re-run may replace).
DATASET_MARKERS = ("manifest.json", "prepare.yaml")
COLUMN_FLAGS = {
    schema.IMAGE: "--image-column",
    schema.TITLE: "--title-column",
    schema.CATEGORY: "--category-column",
    schema.PRICE: "--price-column",
}


class SplitFractions(VistuneConfig):
    """Share of rows per split; whole groups move, so the result is close, not exact."""

    train: float = Field(0.8, ge=0.0, le=1.0)
    validation: float = Field(0.1, ge=0.0, le=1.0)
    test: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6) or self.train <= 0:
            raise ValueError(f"train + validation + test must be 1 with train > 0 (got {total:g})")
        return self


class DownloadSettings(VistuneConfig):
    """How image URLs are fetched (see `vistune.data.download`)."""

    concurrency: int = Field(16, ge=1, le=512)
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(0.5, ge=0)
    max_bytes: int = Field(20 * 2**20, ge=1, description="Largest image, downloaded or local.")
    max_redirects: int = Field(5, ge=0, le=20)
    max_retry_after_s: float = Field(30.0, ge=0, description="Longest Retry-After honoured.")
    trust_env: bool = False  # honour HTTP(S)_PROXY / SSL_CERT_FILE / .netrc from the environment


class PrepareConfig(VistuneConfig):
    """Options of `vistune prepare`; saved as `OUT/prepare.yaml`."""

    source: str
    out: Path
    image_column: str | None = None
    title_column: str | None = None
    category_column: str | None = None
    price_column: str | None = None
    product_column: str | None = None
    splits: SplitFractions = Field(default_factory=SplitFractions)
    seed: int = 0
    max_price: float = Field(
        DEFAULT_MAX_PRICE, gt=0, description="Rows priced above this are dropped (data errors)."
    )
    max_image_side: int = Field(DEFAULT_MAX_SIDE, ge=16)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    allow_private_hosts: bool = False
    allow_hosts: list[str] = Field(default_factory=list)
    allow_outside_paths: bool = Field(
        False,
        description="Read image paths outside the source folder (absolute, ../, symlinks).",
    )
    workers: int = Field(4, ge=1, le=64)
    group_by: list[str] = Field(
        default_factory=list,
        description="More columns whose shared values keep rows in one split (e.g. title).",
    )
    holdout_combinations: int = Field(
        0, ge=0, description="Attribute combinations held out of training, all in test."
    )
    combination_columns: list[str] = Field(
        default_factory=lambda: list(schema.COMBINATION_COLUMNS),
        description="Columns whose values make a combination (the sample's hidden ones).",
    )

    def download_options(self) -> DownloadOptions:
        return DownloadOptions(
            **self.download.model_dump(),
            allow_private_hosts=self.allow_private_hosts,
            allowed_hosts=frozenset(self.allow_hosts),
        )


class Manifest(BaseModel):
    """What `prepare` read, kept, dropped and wrote; saved as `OUT/manifest.json`."""

    source: str
    source_kind: str
    rows_in: int
    rows_kept: int
    dropped: dict[str, int]
    splits: dict[str, int]
    split_keys: list[str] = Field(default_factory=list)  # rows sharing a value share a split
    held_out: dict[str, Any] | None = None  # columns, combinations and rows held out of train
    images: int
    columns: list[str]
    files: dict[str, str]  # written file -> sha256
    created_at: str
    vistune_version: str
    seconds: float
    config: dict[str, Any]

    def summary(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        dropped = sum(self.dropped.values())
        reasons = ", ".join(f"{r} {c}" for r, c in self.dropped.items())
        return (
            f"prepared {self.rows_kept}/{self.rows_in} rows ({splits}; {self.images} images), "
            f"dropped {dropped}"
            + (f" ({reasons})" if reasons else "")
            + f" in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class Drop:
    source_row: int
    reason: str
    detail: str


@dataclass(frozen=True)
class ImageRef:
    """One distinct image source: `key` identifies it in the journal and across rows."""

    key: str
    kind: str  # "url", "file", "bytes" or "pil"
    label: str  # what the source said, kept in the `source_image` column
    value: Any


def prepare_dataset(config: PrepareConfig, show_progress: bool = True) -> Manifest:
    """Read, check, fetch, validate, split and write the dataset dir; return its manifest."""
    from vistune import __version__

    started = time.perf_counter()
    target = Path(config.out)
    check_output_dir(target, DATASET_MARKERS, "dataset")
    table = read_source(config.source, text_columns=_text_columns(config))
    frame = table.frame
    if frame.empty:
        raise DataError(f"{config.source}: the source has no rows")
    columns = resolve_columns(frame, config)
    out = staging_path(target)  # everything is written here, then swapped in
    if not out.exists():
        seed_from_previous(target, out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    config.save(out / "prepare.yaml")

    drops: list[Drop] = []
    fields = check_rows(frame, columns, drops, max_price=config.max_price)
    refs: dict[int, ImageRef] = {}
    for row in list(fields):
        ref = image_ref(
            frame.at[row, columns[schema.IMAGE]],
            table,
            allow_outside=config.allow_outside_paths,
        )
        if isinstance(ref, Drop):
            drops.append(Drop(row, ref.reason, ref.detail))
            del fields[row]
        else:
            refs[row] = ref

    distinct = {ref.key: ref for ref in refs.values()}
    results = process_images(distinct, config, out, show_progress)
    kept_rows: list[int] = []
    for row, ref in refs.items():
        result = results[ref.key]
        if isinstance(result, Drop):
            drops.append(Drop(row, result.reason, result.detail))
        else:
            fields[row].update(
                {
                    schema.IMAGE: f"{IMAGES_DIR}/{result['file']}",
                    "image_sha256": result["sha256"],
                    schema.SOURCE_IMAGE: ref.label,
                }
            )
            kept_rows.append(row)
    drops.sort(key=lambda d: d.source_row)
    write_dropped(out / "dropped.jsonl", drops)
    if not kept_rows:
        counts = Counter(d.reason for d in drops)
        raise DataError(
            f"{config.source}: no usable rows: all {len(frame)} rows were dropped "
            f"({', '.join(f'{r} {c}' for r, c in counts.most_common())}); "
            f"see {out / 'dropped.jsonl'}"
        )

    kept = build_output_frame(frame, sorted(kept_rows), fields, columns)
    plan = plan_splits(
        kept,
        keys=list(dict.fromkeys([schema.PRODUCT, "image_sha256", *config.group_by])),
        stratum=schema.CATEGORY,
        fractions=config.splits.model_dump(),
        seed=config.seed,
        holdout_combinations=config.holdout_combinations,
        combination_columns=config.combination_columns,
    )
    split = plan.split
    files = write_splits(kept, split, out)
    files["dropped.jsonl"] = _sha256_file(out / "dropped.jsonl")
    remove_orphan_images(out / IMAGES_DIR, set(kept[schema.IMAGE]))

    dropped = Counter(d.reason for d in drops)
    manifest = Manifest(
        source=config.source,
        source_kind=table.kind,
        rows_in=len(frame),
        rows_kept=len(kept),
        dropped={r: dropped[r] for r in schema.DROP_REASONS if dropped[r]},
        splits={name: int((split == name).sum()) for name in schema.SPLITS},
        split_keys=plan.keys,
        held_out=(
            {
                "columns": plan.holdout_columns,
                "combinations": plan.held_out,
                "rows": plan.held_out_rows,
            }
            if plan.holdout_columns
            else None
        ),
        images=int(kept[schema.IMAGE].nunique()),
        columns=list(kept.columns),
        files=files,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        vistune_version=__version__,
        seconds=round(time.perf_counter() - started, 3),
        config=config.model_dump(mode="json"),
    )
    atomic_write_bytes(out / "manifest.json", manifest.model_dump_json(indent=2).encode())
    swap_into_place(out, target)
    return manifest


def seed_from_previous(previous: Path, staging: Path) -> None:
    """Start a re-run from the images and journal of the dataset it replaces (hard links),
    so preparing the same catalog again fetches and decodes nothing twice."""
    staging.mkdir(parents=True)
    if (previous / IMAGES_DIR).is_dir():  # images never change in place: links are safe
        link_or_copy_tree(previous / IMAGES_DIR, staging / IMAGES_DIR)
    if (previous / CACHE_DIR).is_dir():  # the journal is appended to: a copy of its own
        shutil.copytree(previous / CACHE_DIR, staging / CACHE_DIR)


def remove_orphan_images(images_dir: Path, used: set[str]) -> None:
    """Delete stored images no kept row points at (left by a previous run or a source
    that changed), so the dataset folder holds exactly what its Parquet files use."""
    keep = {Path(name).name for name in used}
    for path in images_dir.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()


def _text_columns(config: PrepareConfig) -> list[str]:
    return [c for c in (config.product_column or schema.PRODUCT, config.title_column) if c]


def resolve_columns(frame: pd.DataFrame, config: PrepareConfig) -> dict[str, str | None]:
    """Source column for each canonical column: the explicit mapping, else the first
    default candidate present. Unknown or absent columns are errors listing what exists."""
    available = [str(c) for c in frame.columns]
    explicit = {
        schema.IMAGE: config.image_column,
        schema.TITLE: config.title_column,
        schema.CATEGORY: config.category_column,
        schema.PRICE: config.price_column,
    }
    resolved: dict[str, str | None] = {}
    for canonical, chosen in explicit.items():
        flag = COLUMN_FLAGS[canonical]
        if chosen is not None:
            if chosen not in frame.columns:
                raise DataError(
                    f"{config.source}: {flag} {chosen!r} is not a column; "
                    f"available columns: {', '.join(available)}"
                )
            resolved[canonical] = chosen
            continue
        found = next((c for c in schema.DEFAULT_CANDIDATES[canonical] if c in frame.columns), None)
        if found is None:
            raise DataError(
                f"{config.source}: no {canonical} column (looked for "
                f"{', '.join(schema.DEFAULT_CANDIDATES[canonical])}); available columns: "
                f"{', '.join(available)}; pass {flag} NAME"
            )
        resolved[canonical] = found
    if config.product_column is not None and config.product_column not in frame.columns:
        raise DataError(
            f"{config.source}: product_column {config.product_column!r} is not a column; "
            f"available columns: {', '.join(available)}"
        )
    product = config.product_column or (schema.PRODUCT if schema.PRODUCT in frame.columns else None)
    resolved[schema.PRODUCT] = product
    return resolved


def check_rows(
    frame: pd.DataFrame,
    columns: dict[str, str | None],
    drops: list[Drop],
    *,
    max_price: float = DEFAULT_MAX_PRICE,
) -> dict[int, dict[str, Any]]:
    """Drop exact duplicates (keeping the first), empty titles, missing categories and bad
    prices; return the canonical values of every row that passed, by source row."""
    first_seen: dict[Any, int] = {}
    fields: dict[int, dict[str, Any]] = {}
    records = frame.to_dict("records")
    for row, record in enumerate(records):
        key = tuple(_hashable(v) for v in record.values())
        if key in first_seen:
            drops.append(
                Drop(row, schema.DUPLICATE_ROW, f"same values as source row {first_seen[key]}")
            )
            continue
        first_seen[key] = row
        title = _text(record[columns[schema.TITLE]])
        if not title:
            drops.append(Drop(row, schema.EMPTY_TITLE, f"{columns[schema.TITLE]} is empty"))
            continue
        category = _text(record[columns[schema.CATEGORY]])
        if not category:
            drops.append(Drop(row, schema.MISSING_CATEGORY, f"{columns[schema.CATEGORY]} is empty"))
            continue
        try:
            price = parse_price(record[columns[schema.PRICE]], max_price=max_price)
        except PriceError as exc:
            drops.append(Drop(row, exc.reason, f"{columns[schema.PRICE]}: {exc.detail}"))
            continue
        product_column = columns[schema.PRODUCT]
        product = _text(record[product_column]) if product_column else None
        fields[row] = {
            schema.TITLE: title,
            schema.CATEGORY: category,
            schema.PRICE: price,
            schema.PRODUCT: product or f"row-{row}",
        }
    return fields


def image_ref(value: Any, table: SourceTable, *, allow_outside: bool = False) -> ImageRef | Drop:
    """What to fetch or read for one image cell (URL, path, HF Image dict, bytes, PIL).

    A local path must stay inside the source's folder once `..` and symlinks are resolved
    (a catalog naming `../secret.png`, `/etc/passwd` or `/proc/self/environ` is refused
    with `refused_path`) unless `allow_outside` is set.
    """
    if isinstance(value, Image.Image):
        digest = hashlib.sha256(value.tobytes() + f"{value.mode}{value.size}".encode()).hexdigest()
        return ImageRef(f"pil:{digest}", "pil", "<PIL image>", value)
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            digest = hashlib.sha256(data).hexdigest()
            return ImageRef(f"sha256:{digest}", "bytes", path or "<embedded bytes>", bytes(data))
        value = path
    if isinstance(value, (bytes, bytearray)) and value:
        digest = hashlib.sha256(value).hexdigest()
        return ImageRef(f"sha256:{digest}", "bytes", "<embedded bytes>", bytes(value))
    text = _text(value)
    if not text:
        return Drop(-1, schema.MISSING_IMAGE, "image value is empty")
    if not isinstance(value, str):
        return Drop(-1, schema.INVALID_IMAGE, f"unsupported image value of type {type(value)}")
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return ImageRef(f"url:{text}", "url", text, text)
    if scheme:
        return Drop(-1, schema.REFUSED_URL, f"{text}: only http(s) URLs and local paths")
    path = Path(text).expanduser()
    if not path.is_absolute():
        if table.base_dir is None:
            return Drop(-1, schema.MISSING_IMAGE, f"{text}: relative path with no source folder")
        path = table.base_dir / path
    if not allow_outside:
        roots = confinement_roots(table)
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            where = " or ".join(str(root) for root in roots)
            return Drop(
                -1,
                schema.REFUSED_PATH,
                f"{text}: outside {where}; pass --allow-outside-paths to read it",
            )
    try:
        stat = path.stat()
    except OSError:
        return Drop(-1, schema.MISSING_IMAGE, f"{path}: file not found")
    if not path.is_file():
        return Drop(-1, schema.MISSING_IMAGE, f"{path}: not a file")
    key = f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return ImageRef(key, "file", text, path)


def confinement_roots(table: SourceTable) -> list[Path]:
    """Where a source's local image paths may point: its own folder, or for a hub dataset
    the `datasets` cache its files were extracted to."""
    if table.base_dir is not None:
        return [table.base_dir.resolve()]
    if table.kind == "hub":
        import datasets

        return [Path(datasets.config.HF_DATASETS_CACHE).resolve()]
    return []


def process_images(
    refs: dict[str, ImageRef], config: PrepareConfig, out: Path, show_progress: bool
) -> dict[str, dict[str, Any] | Drop]:
    """Result per distinct image: the journal entry of the stored file, or why it failed."""
    images_dir = out / IMAGES_DIR
    settings = f"{config.max_image_side}:{config.max_image_pixels}"
    tag = hashlib.sha1(settings.encode()).hexdigest()[:12]
    results: dict[str, dict[str, Any] | Drop] = {}
    for stale in images_dir.glob(".*.tmp"):  # half-written files of an interrupted run
        stale.unlink(missing_ok=True)
    with ImageJournal(out / CACHE_DIR / f"images-{tag}.jsonl", images_dir) as journal:
        todo = []
        for key, ref in refs.items():
            entry = journal.get(key)
            if entry is not None:
                results[key] = entry
            else:
                todo.append(ref)
        urls = [r for r in todo if r.kind == "url"]
        local = [r for r in todo if r.kind != "url"]
        progress = make_progress(show_progress)

        def finish(ref: ImageRef, data: bytes) -> dict[str, Any] | Drop:
            try:
                image = normalise_image(
                    data, max_side=config.max_image_side, max_pixels=config.max_image_pixels
                )
            except ImageError as exc:
                return Drop(-1, schema.INVALID_IMAGE, f"{ref.label}: {exc}")
            entry = {
                "file": store_image(image, images_dir),
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
            }
            journal.record(ref.key, entry)
            return entry

        with progress, ThreadPoolExecutor(config.workers) as pool:
            if local:
                task = progress.add_task("images (local)", total=len(local))

                def one_local(ref: ImageRef) -> tuple[str, dict[str, Any] | Drop]:
                    try:
                        data = _local_bytes(ref, config.download.max_bytes)
                    except OSError as exc:
                        reason = exc.strerror or type(exc).__name__
                        return ref.key, Drop(-1, schema.MISSING_IMAGE, f"{ref.label}: {reason}")
                    except ImageError as exc:
                        return ref.key, Drop(-1, schema.INVALID_IMAGE, f"{ref.label}: {exc}")
                    return ref.key, finish(ref, data)

                for key, result in pool.map(one_local, local):
                    results[key] = result
                    progress.advance(task)
            if urls:
                task = progress.add_task("images (download)", total=len(urls))
                downloaded = asyncio.run(
                    _download_all(
                        urls,
                        config.download_options(),
                        pool,
                        finish,
                        lambda: progress.advance(task),
                    )
                )
                results.update(downloaded)
    return results


async def _download_all(
    refs: list[ImageRef],
    options: DownloadOptions,
    pool: ThreadPoolExecutor,
    finish: Callable[[ImageRef, bytes], dict[str, Any] | Drop],
    advance: Callable[[], None],
) -> dict[str, dict[str, Any] | Drop]:
    """Fetch and finish every URL with `options.concurrency` download workers.

    Each worker owns one client of a few connections and hands every body to the thread
    pool for validation, then goes on downloading; a semaphore caps the bodies held in
    memory (downloading, waiting for or in validation) at twice the concurrency.
    """
    loop = asyncio.get_running_loop()
    bodies = asyncio.Semaphore(2 * options.concurrency)
    results: dict[str, dict[str, Any] | Drop] = {}
    pending: set[asyncio.Future] = set()
    todo = iter(refs)  # shared by the workers; safe, they all run on this event loop

    async def validate(ref: ImageRef, data: bytes) -> None:
        try:
            results[ref.key] = await loop.run_in_executor(pool, finish, ref, data)
        finally:
            bodies.release()
            advance()

    async def worker(client: Any) -> None:
        for ref in todo:
            await bodies.acquire()
            try:
                data = await fetch_bytes(client, ref.value, options)
            except FetchError as exc:
                results[ref.key] = Drop(-1, exc.reason, exc.detail)
                bodies.release()
                advance()
            except BaseException:
                bodies.release()
                raise
            else:
                task = asyncio.ensure_future(validate(ref, data))
                pending.add(task)
                task.add_done_callback(pending.discard)

    clients = make_clients(options)
    try:
        await asyncio.gather(
            *(worker(clients[k % len(clients)]) for k in range(options.concurrency))
        )
        while pending:
            await asyncio.gather(*list(pending))
    finally:
        for client in clients:
            await client.aclose()
    return results


def _local_bytes(ref: ImageRef, max_bytes: int) -> bytes:
    if ref.kind == "file":
        return read_capped(Path(ref.value), max_bytes)
    if ref.kind == "bytes":
        return ref.value
    buffer = io.BytesIO()
    ref.value.save(buffer, format="PNG")
    return buffer.getvalue()


def read_capped(path: Path, max_bytes: int) -> bytes:
    """A local image's bytes, refused (ImageError) past `max_bytes` without reading them all:
    the same cap as downloads, so a 1.5 GB file in a catalog costs nothing."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ImageError(f"file of {size:,} bytes exceeds the cap of {max_bytes:,} bytes")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # a file that lied about its size (/proc, a growing file)
        raise ImageError(f"file exceeds the cap of {max_bytes:,} bytes")
    return data


def build_output_frame(
    frame: pd.DataFrame,
    rows: list[int],
    fields: dict[int, dict[str, Any]],
    columns: dict[str, str | None],
) -> pd.DataFrame:
    """Source columns of the kept rows, canonical columns set, `source_row` added."""
    kept = frame.iloc[rows].copy()
    canonical = pd.DataFrame.from_records([fields[r] for r in rows], index=kept.index)
    for column in canonical.columns:
        kept[column] = canonical[column]
    kept[schema.SOURCE_ROW] = np.asarray(rows, dtype=np.int64)
    kept[schema.PRICE] = kept[schema.PRICE].astype(np.float64)
    return kept.reset_index(drop=True)


def write_splits(kept: pd.DataFrame, split: np.ndarray, out: Path) -> dict[str, str]:
    """One Arrow schema for all splits (so `datasets` loads them together); atomic writes."""
    table = pa.Table.from_pandas(_arrow_safe(kept), preserve_index=False)
    files = {}
    for name in schema.SPLITS:
        part = table.filter(pa.array(split == name))
        target = out / f"{name}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(part, tmp)
        os.replace(tmp, target)
        files[target.name] = _sha256_file(target)
    return files


def write_dropped(path: Path, drops: Iterable[Drop]) -> None:
    lines = (
        json.dumps({"source_row": d.source_row, "reason": d.reason, "detail": d.detail})
        for d in drops
    )
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode())


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns Arrow cannot type (mixed Python objects) become text; None stays null."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            pa.array(frame[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            frame[column] = [None if _missing(v) else str(v) for v in frame[column]]
    return frame


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    if _missing(value) or value is pd.NA:
        return ""
    if isinstance(value, (bytes, bytearray, dict, list, Image.Image)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a code read as a float from a CSV: 80000003.0 -> 80000003
    return str(value).strip()


def _hashable(value: Any) -> Any:
    if _missing(value) or value is pd.NA:
        return None
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (bytes, bytearray)):
        return ("bytes", hashlib.sha1(value).hexdigest())
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Image.Image):
        return ("pil", hashlib.sha1(value.tobytes()).hexdigest())
    return value
