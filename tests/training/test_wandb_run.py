"""A training run in W&B offline mode: run dir, logged keys, generated-answer table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from vistune.training import TrainConfig, run_training

pytestmark = pytest.mark.slow


def test_offline_run_logs_metrics_and_table(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = make_config(
        model="tiny",  # built into RUN_DIR/base_model with a tokenizer fitted to the catalog
        tiny={"text_layers": 1, "vision_layers": 1},
        report_to=["wandb", "tensorboard"],
        max_steps=2,
        eval_steps=2,
        eval_generate_samples=3,
        max_answer_tokens=64,
    )
    result = run_training(config)
    built = json.loads((result.run_dir / "base_model" / "config.json").read_text())
    assert built["num_hidden_layers"] == 1
    offline = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    files = offline[0] / "files"
    # offline runs keep history and config as protobuf records in run-*.wandb (read by
    # `wandb sync`); the keys are stored verbatim, so a byte search finds what was logged
    # wandb-core may still be writing after finish() returns on a loaded machine: wait for it
    records_file = next(offline[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60
    while b"eval/generations" not in records_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    records = records_file.read_bytes()
    for key in (
        "answer_template",  # the resolved TrainConfig
        "learning_rate",
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/samples_per_second",
        "train/tokens_per_second",
        "eval/loss",
        "eval/gen_parse_rate",
        "eval/generations",
    ):
        assert key.encode() in records, f"{key} was not logged"
    tables = list((files / "media" / "table").rglob("*.table.json"))
    assert tables, "no validation table logged"
    table = json.loads(tables[0].read_text())
    assert {"image", "expected", "generated"} <= set(table["columns"])
    assert len(table["data"]) == 3
    samples = list((result.run_dir / "eval_samples").glob("step-2.jsonl"))
    assert samples
    assert list((result.run_dir / "runs").rglob("events.out.tfevents.*"))  # tensorboard
