"""`vistune evaluate` end to end on a 20-step tiny training run and on a model folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from vistune.cli import app
from vistune.evaluation.generation import PREDICTION_COLUMNS
from vistune.evaluation.metrics import METRIC_KEYS

QUESTION = "Which product is this, and what does it cost?"


@pytest.fixture(scope="module")
def trained_run(prepared_dir: Path, tiny_phi3v_dir: Path, tmp_path_factory) -> Path:
    from vistune.training import TrainConfig, run_training

    config = TrainConfig.from_dict(
        {
            "data": str(prepared_dir),
            "model": str(tiny_phi3v_dir),
            "output": str(tmp_path_factory.mktemp("train") / "run"),
            "method": "full",
            "max_steps": 20,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "eval_steps": None,
            "save_steps": 1000,
            "report_to": ["none"],
            "dataloader_workers": 0,
            "question": QUESTION,
            "max_answer_tokens": 70,
        }
    )
    return run_training(config).run_dir


@pytest.mark.slow
def test_evaluate_run_dir_end_to_end(
    trained_run: Path, prepared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    out = tmp_path / "eval"
    args = [
        "evaluate",
        str(trained_run),
        "--data",
        str(prepared_dir),
        "--out",
        str(out),
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--compare-base",
        "--set",
        "max_new_tokens=16",  # explicit beats the run's 70; keeps the test quick
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "median $" in result.stdout and "blank img" in result.stdout  # model vs baselines
    assert "Price MAPE" in result.stdout

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["run"]["question"] == QUESTION  # taken from RUN_DIR/config.yaml
    assert summary["run"]["max_new_tokens"] == 16
    assert set(METRIC_KEYS) <= set(summary["metrics"]) and summary["metrics"]["n"] == 4
    assert summary["metrics_parsed_only"]["n"] == summary["metrics"]["n_parsed"]
    assert summary["ablation"]["n"] == 4
    base = yaml.safe_load((trained_run / "config.yaml").read_text())["model"]
    assert summary["base_model"]["source"] == base and summary["base_model"]["n"] == 4
    assert {"global_median_price", "category_median_price", "most_frequent_category"} == set(
        summary["baselines"]
    )
    assert sum(c["n"] for c in summary["per_category"].values()) == 4

    preds = pd.read_parquet(out / "predictions.parquet")
    assert tuple(preds.columns) == PREDICTION_COLUMNS and len(preds) == 4
    assert all((prepared_dir / p).is_file() for p in preds["image"])
    assert len(pd.read_parquet(out / "predictions_blank_image.parquet")) == 4

    saved = (out / "evaluate.yaml").read_text()
    assert QUESTION in saved and "max_new_tokens: 16" in saved

    page = (out / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and all(r.startswith("data:") for r in refs)
    assert len(re.findall(r"data:image/jpeg;base64,", page)) == 4  # worst + best cover all 4

    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("run-*.wandb")).read_bytes()  # protobuf log of the offline run
    for key in (b"eval/price_mape", b"baseline/global_median_price/price_mape", b"ablation/n"):
        assert key in records
    tables = list((runs[0] / "files" / "media" / "table").glob("test_predictions_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["image", "source_row", "expected"] and len(table["data"]) == 4
    assert all(row[0] for row in table["data"])  # an image in every row (media staged by wandb)


@pytest.mark.slow
def test_evaluate_model_folder_without_ablation(
    tiny_phi3v_dir: Path, prepared_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = [
        "evaluate",
        str(tiny_phi3v_dir),
        "--data",
        str(prepared_dir),
        "--out",
        str(out),
        "--split",
        "validation",
        "--limit",
        "4",
        "--no-ablation",
        "--set",
        "max_new_tokens=6",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["ablation"] is None and summary["run"]["split"] == "validation"
    assert not (out / "predictions_blank_image.parquet").exists()
    assert "blank image (ablation)" not in (out / "report.html").read_text()


def test_evaluate_missing_split_is_a_clear_error(prepared_dir: Path, tmp_path: Path) -> None:
    args = [
        "evaluate",
        "tiny",
        "--data",
        str(prepared_dir),
        "--out",
        str(tmp_path / "e"),
        "--split",
        "holdout",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "holdout" in result.output
