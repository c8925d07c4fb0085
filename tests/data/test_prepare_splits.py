"""`prepare --group-by` and `--holdout-combinations` on the realistic sample: no leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from vistune.cli import app
from vistune.data import schema
from vistune.data.dataset import load_split
from vistune.data.sample import generate_catalog


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("realistic")
    generate_catalog(out, rows=400, seed=2, image_size=32, workers=1)
    return out


def splits_of(data: Path) -> dict[str, pd.DataFrame]:
    return {name: load_split(data, name) for name in schema.SPLITS}


def assert_no_shared_value(splits: dict[str, pd.DataFrame], column: str) -> None:
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(splits[a][column]) & set(splits[b][column])
            assert not shared, f"{column} shared by {a} and {b}: {sorted(shared)[:3]}"


def test_group_by_title_keeps_relisted_styles_in_one_split(realistic, tmp_path) -> None:
    catalog = pd.read_parquet(realistic / "catalog.parquet")
    relisted = catalog.groupby("title")["product_code"].nunique()
    assert (relisted > 1).sum() >= 5  # styles listed under two product codes exist
    out = tmp_path / "data"
    args = ["prepare", str(realistic), "--out", str(out), "--group-by", "title", "--seed", "1"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_keys"] == ["product_code", "image_sha256", "title"]
    assert manifest["config"]["group_by"] == ["title"]
    splits = splits_of(out)
    for column in manifest["split_keys"]:
        assert_no_shared_value(splits, column)
    # Without the option the same catalog leaks titles across splits (what it is for).
    loose = tmp_path / "loose"
    CliRunner().invoke(app, ["prepare", str(realistic), "--out", str(loose), "--seed", "1"])
    loose_splits = splits_of(loose)
    assert json.loads((loose / "manifest.json").read_text())["split_keys"] == [
        "product_code",
        "image_sha256",
    ]
    train_titles = set(loose_splits["train"]["title"])
    assert train_titles & (
        set(loose_splits["test"]["title"]) | set(loose_splits["validation"]["title"])
    )


def test_holdout_combinations_never_reach_training(realistic, tmp_path) -> None:
    out = tmp_path / "data"
    args = ["prepare", str(realistic), "--out", str(out), "--holdout-combinations", "12"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    held = manifest["held_out"]
    columns = list(schema.COMBINATION_COLUMNS)
    assert held["columns"] == columns and len(held["combinations"]) == 12
    held_combos = {tuple(c[k] for k in columns) for c in held["combinations"]}
    splits = splits_of(out)

    def combos(frame: pd.DataFrame) -> set[tuple]:
        return set(frame[columns].itertuples(index=False, name=None))

    assert held_combos <= combos(splits["test"])
    assert not held_combos & (combos(splits["train"]) | combos(splits["validation"]))
    in_test = splits["test"][columns].apply(tuple, axis=1).isin(held_combos)
    assert int(in_test.sum()) == held["rows"]
    for column in manifest["split_keys"]:
        assert_no_shared_value(splits, column)
    # The test split also holds seen-combination products, so both groups can be scored.
    assert (~in_test).sum() > 0


def test_holdout_on_a_catalog_without_the_columns_says_which(sample_dir, tmp_path) -> None:
    csv = tmp_path / "plain.csv"
    frame = pd.read_parquet(sample_dir / "catalog.parquet").drop(columns=["material"])
    frame["image"] = [str(sample_dir / p) for p in frame["image"]]
    frame.to_csv(csv, index=False)
    args = ["prepare", str(csv), "--out", str(tmp_path / "d"), "--holdout-combinations", "2"]
    args.append("--allow-outside-paths")  # the CSV names the sample's images by absolute path
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "combination_columns: no column 'material'" in result.output
