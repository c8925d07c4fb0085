"""`prepare` against hostile or unlucky catalogs: crafted images, paths that leave the
source folder, huge files, bad prices, and failures in the middle of replacing a dataset."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from vistune.cli import app
from vistune.data import schema
from vistune.data.dataset import load_split
from vistune.data.prepare import PrepareConfig, prepare_dataset
from vistune.errors import DataError
from vistune.outputs import OutputError

SECRET = b"API_KEY=sk-live-0123456789"


def png(seed: int, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20 + seed, 16), (seed * 20 % 256, 80, 120)).save(buffer, "PNG", **save)
    return buffer.getvalue()


def broken_exif_png() -> bytes:
    """Valid pixels, an EXIF chunk whose TIFF header is garbage: Pillow raises SyntaxError
    from `getexif()`, an exception type the old decoder did not catch."""
    return png(99, exif=b"Exif\x00\x00M\x80\x00*\x00\x00\x00\x08\x00\x00")


def catalog(folder: Path, images: list[str], prices: list[object] | None = None) -> Path:
    """A CSV in `folder` whose rows name `images`; good rows get distinct products."""
    rows = [
        {
            "product_code": f"p{i}",
            "title": f"Item {i}",
            "category3_code": "BAGS" if i % 2 else "SHOES",
            "full_price": prices[i] if prices else 100 + i,
            "image": image,
        }
        for i, image in enumerate(images)
    ]
    path = folder / "catalog.csv"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def good_images(folder: Path, count: int, start: int = 0) -> list[str]:
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        (folder / "pics" / f"{i}.png").write_bytes(png(i))
        names.append(f"pics/{i}.png")
    return names


def drops(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def test_crafted_image_is_one_dropped_row_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = good_images(source, 10)
    (source / "pics" / "evil.png").write_bytes(broken_exif_png())
    csv = catalog(source, [*names, "pics/evil.png"])
    for _ in range(2):  # and a re-run does not crash either
        manifest = prepare_dataset(PrepareConfig(source=str(csv), out=tmp_path / "out"), False)
        assert manifest.rows_kept == 10
        assert manifest.dropped == {schema.INVALID_IMAGE: 1}
    (evil,) = drops(tmp_path / "out")
    assert evil["source_row"] == 10 and "SyntaxError" in evil["detail"]


def test_paths_outside_the_source_folder_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = good_images(source, 6)
    (tmp_path / "secret.png").write_bytes(SECRET)
    outside = good_images(tmp_path / "elsewhere", 1, start=50)
    (source / "pics" / "link.png").symlink_to(tmp_path / "secret.png")
    hostile = [
        "../secret.png",
        str(tmp_path / "secret.png"),
        "/proc/self/environ",
        "pics/link.png",  # a symlink that leaves the folder
        str(tmp_path / "elsewhere" / outside[0]),  # a real image, but outside
    ]
    csv = catalog(source, [*names, *hostile])
    out = tmp_path / "out"
    manifest = prepare_dataset(PrepareConfig(source=str(csv), out=out), show_progress=False)
    assert manifest.rows_kept == 6
    assert manifest.dropped == {schema.REFUSED_PATH: 5}
    assert all("--allow-outside-paths" in d["detail"] for d in drops(out))

    allowed = PrepareConfig(source=str(csv), out=out, allow_outside_paths=True)
    manifest = prepare_dataset(allowed, show_progress=False)
    assert manifest.rows_kept == 7  # the image in elsewhere/ is read now
    report = (out / "dropped.jsonl").read_bytes()
    assert SECRET not in report and b"sk-live" not in report  # never echo file bytes
    assert b"API_KEY" not in report


def test_local_files_are_capped_in_bytes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = good_images(source, 6)
    huge = source / "pics" / "huge.png"
    with huge.open("wb") as handle:  # sparse: 1.5 GB on paper, nothing on disk
        handle.truncate(1_500_000_000)
    csv = catalog(source, [*names, "pics/huge.png"])
    config = PrepareConfig(source=str(csv), out=tmp_path / "out", download={"max_bytes": 10**6})
    manifest = prepare_dataset(config, show_progress=False)
    assert manifest.dropped == {schema.INVALID_IMAGE: 1}
    assert "exceeds the cap" in drops(tmp_path / "out")[0]["detail"]


def test_prices_out_of_range_are_dropped_with_a_reason(tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = good_images(source, 9)
    prices = [0, "-0", 1e300, "-0.00", float("inf"), 120, 130, 140, 150]
    csv = catalog(source, names, prices)
    manifest = prepare_dataset(
        PrepareConfig(source=str(csv), out=tmp_path / "out", max_price=145), show_progress=False
    )
    assert manifest.rows_kept == 3
    assert manifest.dropped == {schema.PRICE_OUT_OF_RANGE: 5, schema.NON_NUMERIC_PRICE: 1}
    kept = pd.concat(load_split(tmp_path / "out", s) for s in schema.SPLITS)
    assert sorted(kept["full_price"]) == [120.0, 130.0, 140.0]


def test_failed_prepare_leaves_the_old_dataset_untouched(tmp_path: Path) -> None:
    source = tmp_path / "src"
    csv = catalog(source, good_images(source, 10))
    out = tmp_path / "out"
    prepare_dataset(PrepareConfig(source=str(csv), out=out), show_progress=False)
    before = tree_digest(out)

    bad = tmp_path / "bad"
    bad_csv = catalog(bad, ["nope.png", "gone.png"])
    with pytest.raises(DataError, match="no usable rows"):
        prepare_dataset(PrepareConfig(source=str(bad_csv), out=out), show_progress=False)
    assert tree_digest(out) == before  # not a mix: nothing of the failed run inside


def test_successful_reprepare_leaves_no_orphans(tmp_path: Path) -> None:
    source = tmp_path / "src"
    out = tmp_path / "out"
    first = catalog(source, good_images(source, 10))
    prepare_dataset(PrepareConfig(source=str(first), out=out), show_progress=False)
    other = tmp_path / "other"
    second = catalog(other, good_images(other, 8, start=30))
    prepare_dataset(PrepareConfig(source=str(second), out=out), show_progress=False)
    kept = pd.concat(load_split(out, s) for s in schema.SPLITS)
    on_disk = {p.name for p in (out / "images").iterdir()}
    assert on_disk == {Path(p).name for p in kept["image"]}
    assert len(on_disk) == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers


def test_out_must_be_a_dataset_folder_or_new(tmp_path: Path) -> None:
    source = tmp_path / "src"
    csv = catalog(source, good_images(source, 6))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputError, match="not a folder"):
        prepare_dataset(PrepareConfig(source=str(csv), out=a_file), show_progress=False)
    foreign = tmp_path / "Documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me too")
    with pytest.raises(OutputError, match="not empty"):
        prepare_dataset(PrepareConfig(source=str(csv), out=foreign), show_progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me too"
    result = CliRunner().invoke(app, ["prepare", str(csv), "--out", str(a_file)])
    assert result.exit_code == 1
    assert "not a folder" in result.output and "Traceback" not in result.output
    assert a_file.read_text() == "keep me"


def test_symlinked_source_folder_still_reads_its_own_images(tmp_path: Path) -> None:
    real = tmp_path / "real"
    csv = catalog(real, good_images(real, 6))
    os.symlink(real, tmp_path / "alias")
    manifest = prepare_dataset(
        PrepareConfig(source=str(tmp_path / "alias" / csv.name), out=tmp_path / "out"),
        show_progress=False,
    )
    assert manifest.rows_kept == 6
