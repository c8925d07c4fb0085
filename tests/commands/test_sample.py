"""`vistune sample` on the command line."""

from __future__ import annotations

import pandas as pd
import yaml
from typer.testing import CliRunner

from vistune.cli import app


def test_sample_command_writes_catalog_and_config(tmp_path) -> None:
    out = tmp_path / "cat"
    result = CliRunner().invoke(
        app, ["sample", "--rows", "24", "--out", str(out), "--image-size", "32", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out / "catalog.parquet")
    assert len(frame) == 24
    assert yaml.safe_load((out / "sample.yaml").read_text())["rows"] == 24
    assert "wrote 24 rows" in result.output


def test_sample_command_bad_option_is_one_line_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["sample", "--out", str(tmp_path), "--faults", "2"])
    assert result.exit_code == 1
    assert "faults" in result.output


def test_sample_presets_on_the_command_line(tmp_path) -> None:
    runner = CliRunner()
    simple = runner.invoke(
        app, ["sample", "--rows", "30", "--out", str(tmp_path / "s"), "--preset", "simple"]
    )
    assert simple.exit_code == 0, simple.output
    assert "simple preset" in simple.output
    frame = pd.read_parquet(tmp_path / "s" / "catalog.parquet")
    assert {"material", "pattern", "size"} <= set(frame.columns) and "line" not in frame
    assert yaml.safe_load((tmp_path / "s" / "sample.yaml").read_text())["preset"] == "simple"
    realistic = runner.invoke(app, ["sample", "--rows", "30", "--out", str(tmp_path / "r")])
    assert "realistic preset" in realistic.output
    assert "line" in pd.read_parquet(tmp_path / "r" / "catalog.parquet")
    bad = runner.invoke(app, ["sample", "--out", str(tmp_path / "b"), "--preset", "fancy"])
    assert bad.exit_code == 1 and "preset" in bad.output
