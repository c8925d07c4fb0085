"""`vistune demo`, reduced: the whole pipeline learns the synthetic catalog on CPU.

The full demo (3,040 products, the recipe's steps) takes minutes; this runs the same code
with fewer products and steps. It asserts what a model of that size honestly reaches and
that the image matters: the fine-tuned model beats the price baselines and the most
frequent category, and the same model with a blank image is clearly worse.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vistune.cli import app

#: Reduced sizes: about a minute of training on 2 cores.
ROWS = 800
STEPS = 150


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "vistune-demo"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # the demo's W&B run, offline as on a fresh machine
    # One torch thread: two xdist workers share the 2 cores of CI.
    args = ["demo", "--out", str(out), "--rows", str(ROWS), "--steps", str(STEPS)]
    try:
        result = CliRunner().invoke(app, [*args, "--threads", "1"], catch_exceptions=False)
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    (out / "stdout.txt").write_text(result.output)
    return out


@pytest.mark.slow
def test_demo_writes_every_output(demo_out: Path) -> None:
    assert (demo_out / "data" / "manifest.json").is_file()
    assert (demo_out / "run" / "config.yaml").is_file()
    assert (demo_out / "run" / "final" / "config.json").is_file()
    report = (demo_out / "eval" / "report.html").read_text()
    assert "data:image/png;base64," in report  # pictures and plots are embedded
    offline_runs = list(demo_out.glob("*/wandb/offline-run-*"))
    assert {p.parts[-3] for p in offline_runs} == {"run", "eval"}
    output = (demo_out / "stdout.txt").read_text()
    assert "held-out test products" in output
    assert "report.html" in output and "wandb sync" in output


@pytest.mark.slow
def test_demo_model_beats_baselines_and_needs_the_image(demo_out: Path) -> None:
    summary = json.loads((demo_out / "demo.json").read_text())
    model, ablation, baselines = summary["metrics"], summary["ablation"], summary["baselines"]
    assert model["parse_rate"] >= 0.9
    assert model["price_mape"] < 0.8 * baselines["category_median_price"]["price_mape"]
    assert model["price_mape"] < baselines["global_median_price"]["price_mape"]
    assert model["category_accuracy"] > baselines["most_frequent_category"]["category_accuracy"]
    assert model["category_accuracy"] >= 0.6
    # Without the picture the same model cannot know the product.
    assert ablation["category_accuracy"] < model["category_accuracy"] - 0.3
    assert ablation["price_mape"] > model["price_mape"] + 0.1


def test_rerun_into_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--rows", "100"])
    assert result.exit_code == 1
    assert "not empty" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
