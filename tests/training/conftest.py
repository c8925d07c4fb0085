"""Helpers for training tests: a small, fast TrainConfig on the shared tiny fixtures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vistune.training import TrainConfig


def tiny_config(**overrides: Any) -> TrainConfig:
    """A small, fast TrainConfig (give data, model, output): no trackers or workers, 4 steps."""
    values: dict[str, Any] = {
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


@pytest.fixture(scope="session")
def config_on_fixtures(prepared_dir: Path, tiny_phi3v_dir: Path) -> Callable[..., TrainConfig]:
    """`tiny_config` on the shared tiny catalog and model; call with `output=` + overrides."""
    return functools.partial(tiny_config, data=str(prepared_dir), model=str(tiny_phi3v_dir))


@pytest.fixture
def make_config(
    config_on_fixtures: Callable[..., TrainConfig], tmp_path: Path
) -> Callable[..., TrainConfig]:
    """`make_config(**overrides)`: `tiny_config` on the shared fixtures, output in tmp_path."""

    def build(**overrides: Any) -> TrainConfig:
        return config_on_fixtures(**{"output": str(tmp_path / "run"), **overrides})

    return build
