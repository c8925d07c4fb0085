"""`vistune train` on bad input: one-line errors and exit code 1, before any training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from vistune.cli import app


def run_cli(data: Path, output: Path, *args: str):
    """`vistune train --data DATA --model tiny --output OUTPUT ARGS...` -> (result, message)."""
    command = ["train", "--data", str(data), "--model", "tiny", "--output", str(output), *args]
    result = CliRunner().invoke(app, command)
    return result, (result.stderr or result.output).strip()


def test_unknown_key(tmp_path: Path) -> None:
    result, message = run_cli(tmp_path, tmp_path / "r", "--set", "lerning_rate=1e-4")
    assert result.exit_code == 1
    assert "unknown key 'lerning_rate'" in message
    assert len(message.splitlines()) == 1


def test_qlora_on_cpu(tmp_path: Path) -> None:
    result, message = run_cli(tmp_path, tmp_path / "r", "--method", "qlora")
    assert result.exit_code == 1
    assert "qlora needs a CUDA GPU" in message
    assert len(message.splitlines()) == 1


def test_empty_dataset_dir(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result, message = run_cli(empty, tmp_path / "r", "--report-to", "none")
    assert result.exit_code == 1
    assert "train" in message and str(empty) in message
    assert len(message.splitlines()) == 1


def test_empty_train_split(prepared_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    frame = pd.read_parquet(prepared_dir / "train.parquet").head(0)
    frame.to_parquet(data / "train.parquet")
    result, message = run_cli(data, tmp_path / "r", "--report-to", "none")
    assert result.exit_code == 1
    assert "train split has no rows" in message


def test_missing_train_split(prepared_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split in ("validation", "test"):
        (data / f"{split}.parquet").write_bytes((prepared_dir / f"{split}.parquet").read_bytes())
    result, message = run_cli(data, tmp_path / "r", "--report-to", "none")
    assert result.exit_code == 1
    assert "train" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("tracker", ["mlflow"])
def test_missing_tracker_package(tmp_path: Path, tracker: str) -> None:
    import importlib.util

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    result, message = run_cli(tmp_path, tmp_path / "r", "--report-to", tracker)
    assert result.exit_code == 1
    assert f"pip install {tracker}" in message


def test_resume_without_checkpoint(tmp_path: Path) -> None:
    result, message = run_cli(tmp_path, tmp_path / "r", "--resume", "--report-to", "none")
    assert result.exit_code == 1
    assert "no complete checkpoint" in message
