"""Atomic output folders: build next to the target, swap in only when complete.

A command that writes a folder (`prepare`, `export`, `evaluate --out`) writes into a hidden
sibling `.NAME.partial` and renames it over `NAME` only after everything succeeded, so a
failed or killed run leaves the previous folder exactly as it was, and a successful one
leaves no file of the previous run behind. A folder that exists but was not written by the
command (no marker file) is refused rather than replaced: `--out ~/Documents` must not
delete anything.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vistune.errors import VistuneError


class OutputError(VistuneError):
    """An output path that cannot be written (an existing file, a foreign folder)."""


def staging_path(out: Path) -> Path:
    """The hidden sibling a run writes into; deterministic, so a killed run is resumed."""
    return out.parent / f".{out.name}.partial"


def check_output_dir(out: Path, markers: tuple[str, ...], what: str) -> None:
    """Refuse an `out` that is a file, or a non-empty folder holding none of `markers`."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; pass a folder path for the {what}")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in markers):
        raise OutputError(
            f"{out}: folder is not empty and does not hold a {what} (none of "
            f"{', '.join(markers)}); it would be replaced as a whole, so pick a new or empty "
            "folder"
        )


def swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with two renames; the old folder is deleted afterwards."""
    if out.exists():
        retired = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, retired)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


@contextmanager
def atomic_output_dir(out: Path, markers: tuple[str, ...], what: str) -> Iterator[Path]:
    """`with atomic_output_dir(out, ...) as work:` write into `work`; it becomes `out` when
    the block succeeds and is deleted when it fails."""
    out = Path(out)
    check_output_dir(out, markers, what)
    work = staging_path(out)
    shutil.rmtree(work, ignore_errors=True)  # what a killed run of this command left
    work.mkdir(parents=True)
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    swap_into_place(work, out)


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Mirror `source` into `target` with hard links (no bytes copied), copying where the
    file system has none; used to start a new dataset from the files of the previous one."""
    for path in source.rglob("*"):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
