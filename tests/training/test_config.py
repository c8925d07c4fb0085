"""TrainConfig: typed schema, CLI/YAML precedence, saved config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from vistune.errors import ConfigError
from vistune.training import TrainConfig

REQUIRED = {"data": "d", "model": "tiny", "output": "o"}


def test_defaults_follow_the_recipe() -> None:
    config = TrainConfig.load(None, None, **REQUIRED)
    assert config.method == "lora"
    assert config.lora.target_modules is None  # the family's defaults
    assert (config.adam_beta1, config.adam_beta2) == (0.9, 0.95)
    assert config.report_to == ["wandb"]
    assert config.question == "What is shown in this image?"


def test_yaml_then_overrides_then_flags(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: full\nlearning_rate: 1.0e-3\nlora:\n  rank: 8\nmax_steps: 5\n")
    config = TrainConfig.load(recipe, ["lora.rank=32", "max_steps=7"], max_steps=9, **REQUIRED)
    assert config.method == "full"
    assert config.learning_rate == 1e-3
    assert config.lora.rank == 32
    assert config.max_steps == 9  # explicit flag wins over --set and YAML


def test_saved_config_reloads_identically(tmp_path: Path) -> None:
    config = TrainConfig.load(
        None, ["report_to=wandb,tensorboard", "tiny.text_layers=1"], **REQUIRED
    )
    assert config.report_to == ["wandb", "tensorboard"]
    again = TrainConfig.load(config.save(tmp_path / "config.yaml"))
    assert again == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "unknown key 'bogus'"),
        ("lora.bogus=1", "unknown key 'lora.bogus'"),
        ("method=dora", "method"),
        ("precision=fp8", "precision"),
        ("report_to=[wandb,none]", "'none' cannot be combined"),
        ("report_to=comet", "report_to"),
        ("learning_rate=-1", "learning_rate"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.load(None, [override], **REQUIRED)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
