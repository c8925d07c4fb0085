"""Helpers for training tests: a small, fast TrainConfig on the shared tiny fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vistune.training import TrainConfig


@pytest.fixture
def make_config(
    prepared_dir: Path, tiny_phi3v_dir: Path, tmp_path: Path
) -> Callable[..., TrainConfig]:
    """`make_config(**overrides)`: tiny model, no trackers, no workers, few steps."""

    def build(**overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {
            "data": str(prepared_dir),
            "model": str(tiny_phi3v_dir),
            "output": str(tmp_path / "run"),
            "method": "full",
            "max_steps": 4,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "lr_scheduler": "constant",
            "logging_steps": 1,
            "eval_steps": None,
            "save_steps": 1000,
            "report_to": ["none"],
            "dataloader_workers": 0,
            "seed": 0,
        }
        values.update(overrides)
        return TrainConfig.from_dict(values)

    return build
