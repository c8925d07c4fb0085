"""`prepare` from local sources: outputs, manifest, faults, mappings, dedupe, errors."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vistune.data import schema
from vistune.data.dataset import load_split, open_image
from vistune.data.prepare import PrepareConfig, prepare_dataset
from vistune.data.sample import generate_catalog
from vistune.errors import DataError, ImageError


def read_all(data_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: load_split(data_dir, name) for name in schema.SPLITS}


def test_prepared_dir_has_contract_columns_and_valid_images(prepared_dir, sample_dir) -> None:
    splits = read_all(prepared_dir)
    frame = pd.concat(splits.values(), ignore_index=True)
    source = pd.read_parquet(sample_dir / "catalog.parquet")
    assert len(frame) == len(source)
    assert set(schema.REAL_COLUMNS) <= set(frame.columns)
    assert set(schema.CANONICAL_COLUMNS) <= set(frame.columns)
    assert frame["full_price"].dtype == np.float64
    assert frame["source_row"].dtype == np.int64
    assert sorted(frame["source_row"]) == list(range(len(source)))
    # Each row keeps its source values.
    by_row = frame.set_index("source_row").sort_index()
    assert (by_row["title"].to_numpy() == source["title"].to_numpy()).all()
    assert np.allclose(by_row["full_price"], source["full_price"])
    assert (by_row["source_image"].to_numpy() == source["image"].to_numpy()).all()
    for relpath in frame["image"].unique():
        assert relpath.startswith("images/")
        image = open_image(prepared_dir, relpath)
        assert image.mode == "RGB" and image.size == (64, 64)


def test_manifest_counts_and_config(prepared_dir, sample_dir) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    splits = read_all(prepared_dir)
    assert manifest["source"] == str(sample_dir)
    assert manifest["rows_in"] == manifest["rows_kept"] == 160
    assert manifest["dropped"] == {}
    assert manifest["splits"] == {name: len(frame) for name, frame in splits.items()}
    assert all(manifest["splits"][name] > 0 for name in schema.SPLITS)
    assert manifest["vistune_version"] and manifest["created_at"].endswith("+00:00")
    assert manifest["config"]["splits"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert (prepared_dir / "prepare.yaml").is_file()
    assert (prepared_dir / "dropped.jsonl").read_text() == ""


def test_no_product_or_image_crosses_splits(prepared_dir) -> None:
    splits = read_all(prepared_dir)
    for column in ("product_code", "image"):
        owners = {}
        for name, frame in splits.items():
            for value in frame[column]:
                assert owners.setdefault(value, name) == name, (column, value)


def test_loads_with_datasets_parquet(prepared_dir) -> None:
    import datasets

    files = {name: str(prepared_dir / f"{name}.parquet") for name in schema.SPLITS}
    loaded = datasets.load_dataset(
        "parquet", data_files=files, cache_dir=str(prepared_dir.parent / "hf-cache")
    )
    assert {name: loaded[name].num_rows for name in schema.SPLITS} == {
        name: len(load_split(prepared_dir, name)) for name in schema.SPLITS
    }
    assert isinstance(loaded["train"][0]["full_price"], float)


def test_load_split_and_open_image_errors(prepared_dir, tmp_path) -> None:
    with pytest.raises(DataError, match=r"'dev' not found; splits here: test, train, validation"):
        load_split(prepared_dir, "dev")
    with pytest.raises(DataError, match="no splits here"):
        load_split(tmp_path, "train")
    with pytest.raises(ImageError, match="not found"):
        open_image(prepared_dir, "images/nope.jpg")


def test_same_seed_same_split_other_seed_differs(sample_dir, prepared_dir, tmp_path) -> None:
    again = prepare_dataset(
        PrepareConfig(source=str(sample_dir), out=tmp_path / "a"), show_progress=False
    )
    other = prepare_dataset(
        PrepareConfig(source=str(sample_dir), out=tmp_path / "b", seed=5), show_progress=False
    )
    first = load_split(prepared_dir, "test")["source_row"].tolist()
    assert load_split(tmp_path / "a", "test")["source_row"].tolist() == first
    assert load_split(tmp_path / "b", "test")["source_row"].tolist() != first
    assert again.splits == json.loads((prepared_dir / "manifest.json").read_text())["splits"]
    assert other.rows_kept == 160


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> tuple[Path, pd.DataFrame, Path]:
    source = tmp_path_factory.mktemp("faulty-src")
    frame = generate_catalog(source, rows=140, seed=4, image_size=32, faults=0.1)
    out = tmp_path_factory.mktemp("faulty-out")
    prepare_dataset(PrepareConfig(source=str(source), out=out), show_progress=False)
    return source, frame, out


def expected_reasons(source: Path, frame: pd.DataFrame) -> dict[int, str]:
    """Independent reading of the faulty catalog: the reason each bad row must be dropped."""
    reasons: dict[int, str] = {}
    duplicated = frame.duplicated(keep="first")
    for row, record in frame.iterrows():
        price = str(record["full_price"])
        path = source / record["image"]
        if duplicated[row]:
            reasons[row] = schema.DUPLICATE_ROW
        elif record["title"] == "":
            reasons[row] = schema.EMPTY_TITLE
        elif price in ("N/A", "call for price", "TBD"):
            reasons[row] = schema.NON_NUMERIC_PRICE
        elif price.startswith("-"):
            reasons[row] = schema.NEGATIVE_PRICE
        elif not path.exists():
            reasons[row] = schema.MISSING_IMAGE
        else:
            try:
                Image.open(io.BytesIO(path.read_bytes())).load()
            except OSError:
                reasons[row] = schema.INVALID_IMAGE
    return reasons


def test_every_injected_fault_is_dropped_with_its_reason(faulty) -> None:
    source, frame, out = faulty
    expected = expected_reasons(source, frame)
    kinds = {schema.DUPLICATE_ROW, schema.EMPTY_TITLE, schema.NON_NUMERIC_PRICE}
    kinds |= {schema.NEGATIVE_PRICE, schema.MISSING_IMAGE, schema.INVALID_IMAGE}
    assert set(expected.values()) == kinds  # the generator injected every kind
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert {d["source_row"]: d["reason"] for d in dropped} == expected
    assert all(d["detail"] for d in dropped)
    manifest = json.loads((out / "manifest.json").read_text())
    counts = pd.Series(list(expected.values())).value_counts().to_dict()
    assert manifest["dropped"] == counts
    assert manifest["rows_kept"] + sum(counts.values()) == manifest["rows_in"] == len(frame)
    kept = pd.concat(read_all(out).values())
    assert set(kept["source_row"]).isdisjoint(expected)
    # Formatted string prices ("$1,290.00", "USD 1,290") became numbers.
    assert kept["full_price"].dtype == np.float64 and (kept["full_price"] > 0).all()


def test_csv_with_column_mapping_and_shared_images(sample_dir, tmp_path) -> None:
    source = pd.read_parquet(sample_dir / "catalog.parquet").drop_duplicates("product_code")
    source = source.head(30).reset_index(drop=True)
    renamed = pd.DataFrame(
        {
            "sku": source["product_code"],
            "name": source["title"],
            "kind": source["category3_code"],
            "cost": [f"${v:,.2f}" for v in source["full_price"]],
            "picture": [str(sample_dir / p) for p in source["image"]],
        }
    )
    # Two different products with one photo: stored once, and kept in one split.
    renamed.loc[5, "picture"] = renamed.loc[6, "picture"]
    csv = tmp_path / "catalog.csv"
    renamed.to_csv(csv, index=False)
    out = tmp_path / "out"
    config = PrepareConfig(
        source=str(csv),
        out=out,
        image_column="picture",
        title_column="name",
        category_column="kind",
        price_column="cost",
        product_column="sku",
        allow_outside_paths=True,  # absolute paths into another folder
    )
    manifest = prepare_dataset(config, show_progress=False)
    kept = pd.concat([load_split(out, s).assign(split=s) for s in schema.SPLITS])
    kept = kept.set_index("source_row").sort_index()
    assert manifest.rows_kept == 30
    assert kept.loc[5, "image"] == kept.loc[6, "image"]
    assert kept.loc[5, "split"] == kept.loc[6, "split"]
    assert manifest.images == renamed["picture"].nunique()
    assert len(list((out / "images").iterdir())) == manifest.images
    assert (kept["cost"] == renamed["cost"]).all()  # original columns are kept
    assert np.allclose(kept["full_price"], source["full_price"])
    assert (kept["title"] == renamed["name"]).all()
    assert (kept["product_code"] == renamed["sku"].astype(str)).all()


def test_jsonl_with_relative_paths_and_embedded_bytes(sample_dir, tmp_path) -> None:
    source = pd.read_parquet(sample_dir / "catalog.parquet").drop_duplicates("product_code")
    source = source.head(12).reset_index(drop=True)
    shutil.copytree(sample_dir / "images", tmp_path / "pics")
    records = source[["product_code", "title", "category3_code", "full_price"]].copy()
    records["image"] = [p.replace("images/", "pics/") for p in source["image"]]
    records.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    manifest = prepare_dataset(
        PrepareConfig(source=str(tmp_path / "rows.jsonl"), out=tmp_path / "a"),
        show_progress=False,
    )
    assert manifest.rows_kept == 12 and manifest.source_kind == "file"

    embedded = records.copy()
    embedded["image"] = [
        {"bytes": (sample_dir / p).read_bytes(), "path": Path(p).name} for p in source["image"]
    ]
    embedded.to_parquet(tmp_path / "rows.parquet")
    manifest = prepare_dataset(
        PrepareConfig(source=str(tmp_path / "rows.parquet"), out=tmp_path / "b"),
        show_progress=False,
    )
    assert manifest.rows_kept == 12
    a = pd.concat(read_all(tmp_path / "a").values()).sort_values("source_row")
    b = pd.concat(read_all(tmp_path / "b").values()).sort_values("source_row")
    assert a["image"].tolist() == b["image"].tolist()  # same bytes, same content-hash name


def test_image_folder_with_metadata(tmp_path) -> None:
    root = tmp_path / "folder"
    colours = {"SCARVES": (200, 30, 30), "BAGS": (30, 30, 200)}
    meta = []
    for category, colour in colours.items():
        (root / category).mkdir(parents=True)
        for k in range(3):
            name = f"{category}/{k}.png"
            Image.new("RGB", (20 + k, 20), colour).save(root / name)
            meta.append({"file_name": name, "title": f"{category} {k}", "full_price": 100 + k})
    meta.append({"file_name": "BAGS/gone.png", "title": "gone", "full_price": 5})
    (root / "SCARVES" / "unlisted.png").write_bytes(b"")  # on disk, not in metadata
    pd.DataFrame(meta).to_csv(root / "metadata.csv", index=False)
    out = tmp_path / "out"
    manifest = prepare_dataset(PrepareConfig(source=str(root), out=out), show_progress=False)
    assert manifest.source_kind == "imagefolder"
    assert manifest.rows_in == 8 and manifest.rows_kept == 6
    kept = pd.concat(read_all(out).values())
    assert set(kept["category3_code"]) == {"SCARVES", "BAGS"}
    assert kept.set_index("title").loc["BAGS 2", "full_price"] == 102.0
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dropped) == ["empty_title", "missing_image"]


def test_hub_dataset_from_local_cache(sample_dir, tmp_path, monkeypatch) -> None:
    """A hub id loads through `datasets` from its cache while offline (no network here)."""
    import datasets

    source = pd.read_parquet(sample_dir / "catalog.parquet").drop_duplicates("product_code")
    source = source.head(10).reset_index(drop=True)
    categories = sorted(source["category3_code"].unique())
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "name": datasets.Value("string"),
            "label": datasets.ClassLabel(names=categories),
            "cost": datasets.Value("float64"),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {
            "image": [str(sample_dir / p) for p in source["image"]],
            "name": source["title"].tolist(),
            "label": [categories.index(c) for c in source["category3_code"]],
            "cost": source["full_price"].tolist(),
        },
        features=features,
    )
    repo = tmp_path / "tiny-catalog"
    dataset.select(range(7)).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    dataset.select(range(7, 10)).to_parquet(repo / "data" / "test-00000-of-00001.parquet")
    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    datasets.load_dataset(str(repo), cache_dir=str(cache))  # what a first online load caches
    # The cache of hub id owner/name is owner___name/ with name-<split>.arrow files inside;
    # the local folder was called tiny-catalog, so only the folder needs the owner prefix.
    (cache / "tiny-catalog").rename(cache / "vistune-tests___tiny-catalog")
    shutil.rmtree(repo)  # nothing but the cache is left

    out = tmp_path / "out"
    config = PrepareConfig(
        source="vistune-tests/tiny-catalog",
        out=out,
        title_column="name",
        price_column="cost",
        allow_outside_paths=True,  # the rows name files in sample_dir, not in the cache
    )
    manifest = prepare_dataset(config, show_progress=False)
    assert manifest.source_kind == "hub" and manifest.rows_kept == 10
    kept = pd.concat(read_all(out).values()).sort_values("source_row")
    assert kept["category3_code"].tolist() == source["category3_code"].tolist()
    assert sorted(set(kept["source_split"])) == ["test", "train"]
    with pytest.raises(DataError, match="offline"):
        prepare_dataset(
            PrepareConfig(source="vistune-tests/absent", out=tmp_path / "x"), show_progress=False
        )


def test_unknown_column_lists_available(sample_dir, tmp_path) -> None:
    config = PrepareConfig(source=str(sample_dir), out=tmp_path, price_column="cost")
    with pytest.raises(DataError, match=r"--price-column 'cost' is not a column; available.*title"):
        prepare_dataset(config, show_progress=False)
    frame = pd.DataFrame({"x": [1], "image": ["a.png"], "title": ["t"], "full_price": [1.0]})
    frame.to_csv(tmp_path / "nocat.csv", index=False)
    with pytest.raises(DataError, match=r"no category3_code column.*--category-column"):
        prepare_dataset(
            PrepareConfig(source=str(tmp_path / "nocat.csv"), out=tmp_path / "o"),
            show_progress=False,
        )


def test_missing_source_and_empty_result(tmp_path) -> None:
    with pytest.raises(DataError, match="source not found"):
        prepare_dataset(
            PrepareConfig(source=str(tmp_path / "nope.csv"), out=tmp_path / "o"),
            show_progress=False,
        )
    pd.DataFrame(
        {"image": ["missing.png"], "title": ["t"], "category3_code": ["c"], "full_price": [1]}
    ).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="no usable rows: all 1 rows were dropped"):
        prepare_dataset(
            PrepareConfig(source=str(tmp_path / "bad.csv"), out=tmp_path / "o"),
            show_progress=False,
        )
    assert not (tmp_path / "o").exists()  # a failed run swaps nothing in
    assert "missing_image" in (tmp_path / ".o.partial" / "dropped.jsonl").read_text()


def test_in_memory_pil_images_and_raw_bytes(tmp_path) -> None:
    from vistune.data.prepare import image_ref, process_images
    from vistune.data.sources import SourceTable

    table = SourceTable(pd.DataFrame(), None, "hub")
    picture = Image.new("RGBA", (30, 20), (10, 200, 30, 255))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    refs = {
        "pil": image_ref(picture, table),
        "bytes": image_ref(buffer.getvalue(), table),
        "dict": image_ref({"bytes": buffer.getvalue(), "path": "x.png"}, table),
    }
    assert refs["pil"].kind == "pil" and refs["bytes"].kind == "bytes"
    assert refs["bytes"].key == refs["dict"].key  # same bytes, one image
    relative = image_ref("pics/a.png", table)
    assert relative.reason == schema.MISSING_IMAGE and "no source folder" in relative.detail
    assert image_ref("ftp://host/a.png", table).reason == schema.REFUSED_URL
    assert image_ref(None, table).reason == schema.MISSING_IMAGE
    results = process_images(
        {r.key: r for r in refs.values()}, PrepareConfig(source="x", out=tmp_path), tmp_path, False
    )
    stored = {results[r.key]["file"] for r in refs.values()}
    assert len(stored) == 1  # RGBA flattened to the same RGB pixels, re-encoded the same way
    with Image.open(tmp_path / "images" / stored.pop()) as image:
        assert image.mode == "RGB" and image.getpixel((3, 3)) == (10, 200, 30)
