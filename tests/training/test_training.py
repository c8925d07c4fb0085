"""End-to-end training on the tiny Phi-3-vision: exact losses, what changes, what stays."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vistune.models.families import load_vlm
from vistune.training import TrainConfig, run_training
from vistune.training.export import export_run

pytestmark = pytest.mark.slow

#: Losses of the first 4 steps of `make_config()` (full fine-tune, lr 1e-3 constant, batch 4,
#: seed 0) on the conftest tiny model and catalog. A change here means the numerics changed:
#: data order, masking, initialisation, optimizer or the model itself.
# Official token layout (a BOS after each image run) since vistune 0.2.
EXPECTED_LOSSES = [6.103112697601318, 5.930758953094482, 5.8107686042785645, 5.691625118255615]


def step_losses(run_dir: Path) -> list[float]:
    state = (
        json.loads((run_dir / "trainer_state.json").read_text())
        if (run_dir / "trainer_state.json").is_file()
        else None
    )
    if state is None:
        checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def state_dict(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_losses_reproducible(make_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    result = run_training(make_config(output=str(tmp_path / "a"), save_steps=4))
    assert result.global_step == 4
    assert step_losses(result.run_dir) == pytest.approx(EXPECTED_LOSSES, abs=1e-4)


def test_full_changes_every_trainable_tensor_and_keeps_the_tower(
    make_config: Callable[..., TrainConfig], tiny_phi3v_dir: Path
) -> None:
    result = run_training(make_config(max_steps=2, learning_rate=1e-2))
    before = state_dict(tiny_phi3v_dir)
    after = state_dict(result.final_dir)
    family = load_vlm(str(tiny_phi3v_dir)).family
    vision = tuple(p.rstrip(".") for p in family.vision_tower_prefixes)
    assert set(after) == set(before)
    tower = [k for k in before if k.startswith(vision)]
    rest = [k for k in before if not k.startswith(vision)]
    assert tower and rest
    for key in tower:
        assert torch.equal(before[key], after[key]), f"frozen {key} changed"
    unchanged = [k for k in rest if torch.equal(before[k], after[k])]
    assert not unchanged, f"trainable tensors did not change: {unchanged}"

    # a full run exports as a copy of final/ (with or without --merge: nothing to merge)
    exported = export_run(result.run_dir, result.run_dir.parent / "export", merge=True)
    assert exported.kind == "full"
    assert state_dict(exported.out_dir).keys() == after.keys()
    assert load_vlm(str(exported.out_dir)).family.name == family.name


def test_lora_changes_only_the_adapter(
    make_config: Callable[..., TrainConfig], tiny_phi3v_dir: Path
) -> None:
    result = run_training(make_config(method="lora", max_steps=2, learning_rate=1e-2))
    files = {p.name for p in result.final_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    adapter_cfg = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert Path(adapter_cfg["base_model_name_or_path"]) == tiny_phi3v_dir.resolve()

    adapter = load_file(result.final_dir / "adapter_model.safetensors")
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and all(adapter[k].abs().sum() > 0 for k in lora_b)
    assert not any("vision_model" in k for k in adapter)  # tower frozen: no LoRA there

    trained = load_vlm(str(result.final_dir), merge_adapter=False)
    base = state_dict(tiny_phi3v_dir)
    merged_names = dict(trained.model.named_parameters())
    checked = 0
    for name, param in merged_names.items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        key = key.replace(".original_module", "")
        if key in base:
            assert torch.equal(param.detach().cpu(), base[key]), f"base weight {key} changed"
            checked += 1
    assert checked > len(base) // 2
