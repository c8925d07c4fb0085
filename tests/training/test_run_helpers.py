"""Small decisions of the recipe: resume checkpoint, run-dir reuse, precision, artifacts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vistune.errors import ConfigError
from vistune.training import run as run_module
from vistune.training.run import (
    check_run_dir,
    last_complete_checkpoint,
    log_final_artifact,
)


def make_checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 4)
    good = make_checkpoint(tmp_path, 8)
    make_checkpoint(tmp_path, 12, complete=False)  # killed mid-save
    make_checkpoint(tmp_path, 100, complete=False)
    assert last_complete_checkpoint(tmp_path) == good
    assert check_run_dir(tmp_path, resume=True) == good


def test_run_dir_is_never_silently_reused(tmp_path: Path) -> None:
    assert check_run_dir(tmp_path / "new", resume=False) is None
    make_checkpoint(tmp_path, 4)
    with pytest.raises(ConfigError, match="--resume"):
        check_run_dir(tmp_path, resume=False)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        check_run_dir(tmp_path / "empty", resume=True)


class FakeRun:
    def __init__(self, mode: str):
        self.settings = SimpleNamespace(mode=mode)
        self.id = "abc123"
        self.logged: list = []

    def log_artifact(self, artifact, aliases=None) -> None:
        self.logged.append((artifact, aliases))


def test_final_model_is_an_artifact_only_online(tmp_path: Path) -> None:
    final = tmp_path / "final"
    final.mkdir()
    (final / "adapter_config.json").write_text("{}")
    offline = FakeRun("offline")
    log_final_artifact(offline, final, "lora")
    assert offline.logged == []
    online = FakeRun("online")
    log_final_artifact(online, final, "lora")
    ((artifact, aliases),) = online.logged
    assert artifact.type == "model" and aliases == ["final"]
    assert artifact.metadata["method"] == "lora"
    log_final_artifact(None, final, "lora")  # no tracker: nothing to do


def test_missing_tracker_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from vistune.training import TrainConfig

    monkeypatch.setattr(run_module.importlib.util, "find_spec", lambda name: None)
    config = TrainConfig.from_dict(
        {"data": "d", "model": "tiny", "output": "o", "report_to": ["tensorboard"]}
    )
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        run_module.check_trackers(config)


def test_qlora_quantizes_only_the_language_model() -> None:
    from transformers.quantizers.quantizers_utils import should_convert_module

    from vistune.training import TrainConfig
    from vistune.training.model import quantization_config

    config = TrainConfig.from_dict({"data": "d", "model": "m", "output": "o", "method": "qlora"})
    skip = quantization_config(config, torch.bfloat16).llm_int8_skip_modules
    assert should_convert_module("model.layers.3.self_attn.qkv_proj", skip)
    for name in (
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.mlp.fc1",
        "model.vision_embed_tokens.img_projection.2",
        "lm_head",
    ):
        assert not should_convert_module(name, skip), name
    lora = config.model_copy(update={"method": "lora"})
    assert quantization_config(lora, torch.bfloat16) is None
