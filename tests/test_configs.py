"""Every shipped recipe under configs/ loads against the training schema (no drift)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from vistune.training.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def assert_written_values_kept(raw: dict, resolved: dict, where: str = "") -> None:
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(resolved[key], dict) and key != "tiny":
            assert_written_values_kept(value, resolved[key], f"{where}{key}.")
        else:
            assert resolved[key] == value, f"{where}{key}"


def load(path: Path) -> TrainConfig:
    return TrainConfig.load(path, data="data/catalog", output="runs/test")


def test_the_four_recipes_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"phi3v-lora.yaml", "phi3v-full.yaml", "phi3.5v-lora.yaml", "tiny-demo.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_config_loads_against_the_schema(path: Path) -> None:
    config = load(path)
    raw = yaml.safe_load(path.read_text())
    # Every key written in the file reached the config unchanged (nothing silently ignored).
    assert_written_values_kept(raw, config.model_dump(mode="json"))
    # The resolved config round-trips through YAML, as `RUN_DIR/config.yaml` does.
    assert TrainConfig.from_dict(yaml.safe_load(config.to_yaml())) == config


@pytest.mark.parametrize("name", ["phi3v-lora.yaml", "phi3.5v-lora.yaml"])
def test_lora_recipes_follow_the_official_recipe(name: str) -> None:
    config = load(CONFIG_DIR / name)
    assert config.method == "lora"
    assert (config.lora.rank, config.lora.alpha) == (64, 128)
    assert config.lora.target_modules == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert (config.adam_beta1, config.adam_beta2) == (0.9, 0.95)
    assert config.learning_rate == 2e-4
    assert config.warmup_steps == 50
    assert config.weight_decay == 0.01
    assert config.max_grad_norm == 1.0
    assert config.gradient_checkpointing and config.precision == "bf16"
    assert config.per_device_batch_size * config.gradient_accumulation_steps == 32
    assert config.num_crops in (4, 16)


def test_models_named_by_the_recipes() -> None:
    assert load(CONFIG_DIR / "phi3v-lora.yaml").model == "microsoft/Phi-3-vision-128k-instruct"
    assert load(CONFIG_DIR / "phi3v-full.yaml").model == "microsoft/Phi-3-vision-128k-instruct"
    assert load(CONFIG_DIR / "phi3.5v-lora.yaml").model == "microsoft/Phi-3.5-vision-instruct"
    assert load(CONFIG_DIR / "phi3v-full.yaml").method == "full"


def test_tiny_demo_trains_a_tiny_model_fully_on_cpu() -> None:
    config = load(CONFIG_DIR / "tiny-demo.yaml")
    assert config.model == "tiny" and config.method == "full"
    assert config.train_vision_tower and config.train_projector  # random init: all must learn
    assert config.precision == "fp32" and not config.gradient_checkpointing
    assert config.tiny["image_size"] % (2 * config.tiny["patch_size"]) == 0
    assert config.tiny.get("num_crops", 1) == (config.num_crops or 1)


def test_installed_package_ships_the_same_files() -> None:
    """`vistune demo` finds its recipe through the package, also when installed from a wheel."""
    packaged = files("vistune") / "configs"
    for path in SHIPPED:
        assert (packaged / path.name).read_text() == path.read_text()


def test_a_missing_required_setting_names_the_flag(tmp_path) -> None:
    from typer.testing import CliRunner

    from vistune.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--data", str(tmp_path)])
    message = (result.stderr or result.output).strip()
    assert result.exit_code == 1
    assert "out is required (pass --out" in message and len(message.splitlines()) == 1
