"""The memory estimate (`vistune.training.memory`) against measured training steps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vistune.errors import ConfigError
from vistune.training import memory
from vistune.training.memory_probe import ProbeSpec, run_probe

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = json.loads((ROOT / "tests" / "models" / "phi3v" / "official_config.json").read_text())
#: The measurements the constants were fitted from (a copy of benchmarks/results/full_size.json
#: from the run described in the README; results/ itself is not versioned).
REFERENCE = ROOT / "benchmarks" / "reference" / "full_size_cpu.json"
GIB = 2**30


def small_config() -> dict:
    """The released config at a fraction of its width (same intermediate/hidden ratio and
    longrope), with a small CLIP: a training step takes about a second on one core."""
    scaling = OFFICIAL["rope_scaling"]
    return {
        **OFFICIAL,
        "hidden_size": 512,
        "intermediate_size": 1365,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 8000,
        "pad_token_id": 7998,
        "image_token_id": 7999,
        "rope_scaling": {
            **scaling,
            "long_factor": scaling["long_factor"][:32],
            "short_factor": scaling["short_factor"][:32],
        },
        "img_processor": {"model_name": "small", "name": "clip_vision_model"},
        "vision_config": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 112,
            "patch_size": 14,
        },
    }


@pytest.mark.parametrize(
    ("method", "checkpointing", "precision"),
    [
        ("lora", False, "fp32"),
        ("full", False, "fp32"),
        ("lora", True, "fp32"),
        ("full", True, "fp32"),
        ("lora", False, "bf16"),
        ("lora", True, "bf16"),
    ],
)
def test_estimate_within_15_percent_of_measured_peaks_at_two_depths(
    method: str, checkpointing: bool, precision: str
) -> None:
    """Coefficients fitted at full width on Phi-3-vision predict a different geometry's
    measured peak (RSS high-water mark of the step) at 2 and 4 layers; bf16 is CPU autocast
    over fp32 weights, as `vistune train --set precision=bf16` runs on CPU."""
    for layers in (2, 4):
        spec = ProbeSpec(
            config=small_config(),
            num_layers=layers,
            method=method,
            gradient_checkpointing=checkpointing,
            grid=4,
            text_tokens=256,
            precision=precision,
            threads=1,
        )
        run = run_probe(spec, timeout=300)
        estimate = memory.estimate_peak(memory.plan_from_probe(run)).total
        error = estimate / run["peak_bytes"] - 1
        assert abs(error) <= 0.15, (
            f"{method} checkpointing={checkpointing} {precision} L={layers}: estimate "
            f"{estimate / GIB:.3f} GiB vs measured {run['peak_bytes'] / GIB:.3f} GiB ({error:+.1%})"
        )


def test_coefficients_are_fitted_from_the_reference_measurements() -> None:
    """Refitting the committed full-width measurements gives the constants in memory.py."""
    reference = json.loads(REFERENCE.read_text())
    fitted = memory.fit_coefficients(reference["runs"])
    assert fitted["transient_runs"] >= 2  # full runs whose peak is the end of the backward
    for name in ("layer", "checkpointed_layer", "base", "transient"):
        assert getattr(memory.COEFFICIENTS, name) == pytest.approx(fitted[name], rel=1e-4), name


def test_estimate_matches_the_reference_measurements() -> None:
    """In-sample: every full-width run the constants came from is within 6 %."""
    for run in json.loads(REFERENCE.read_text())["runs"]:
        estimate = memory.estimate_peak(memory.plan_from_probe(run)).total
        assert estimate == pytest.approx(run["peak_bytes"], rel=0.06), run["spec"]


@pytest.mark.parametrize(("method", "layers"), [("lora", 1), ("full", 1), ("lora", 0), ("full", 0)])
def test_parameter_bytes_from_config_match_a_prepared_model(method: str, layers: int) -> None:
    """The meta-device count behind the plan equals the bytes of a model that vistune's own
    `prepare_model` set up (counted on real tensors); at depth 0, where LoRA has no layer to
    target, the probe's stand-in setup holds what the plan counts (projector trained, its
    original kept, as PEFT keeps it)."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import build_model, prepare

    spec = ProbeSpec(config=small_config(), num_layers=layers, method=method)
    plan = memory.plan_for_probe_spec(spec)
    config = Phi3VConfig.from_dict({**spec.config, "num_hidden_layers": layers})
    model = prepare(build_model(config, seed=0), spec)
    params = list(model.parameters())
    assert plan.weight_bytes == sum(p.numel() * p.element_size() for p in params)
    assert plan.trainable_bytes == sum(
        p.numel() * p.element_size() for p in params if p.requires_grad
    )


def a_plan(**changes) -> memory.MemoryPlan:
    plan = memory.plan_for_phi3v_config(
        OFFICIAL,
        method="lora",
        precision="bf16",
        num_crops=16,
        batch_size=8,
        gradient_checkpointing=False,
    )
    return replace(plan, **changes)


def test_largest_batch_is_the_largest_that_fits() -> None:
    plan = a_plan()
    device = 80 * GIB
    best = memory.largest_batch(plan, device)
    assert best >= 1
    fits = memory.estimate_peak(replace(plan, batch_size=best)).total
    too_big = memory.estimate_peak(replace(plan, batch_size=best + 1)).total
    assert fits <= memory.USABLE_SHARE * device < too_big


def test_larger_settings_need_more_memory() -> None:
    base = memory.estimate_peak(a_plan()).total
    assert memory.estimate_peak(a_plan(batch_size=16)).total > base
    assert memory.estimate_peak(a_plan(tokens_per_sample=4000)).total > base
    assert memory.estimate_peak(a_plan(gradient_checkpointing=True)).total < base
    assert memory.estimate_peak(a_plan(activation_bytes=4)).total > base
    assert memory.estimate_peak(a_plan(loss_tokens_per_sample=512)).total > base


def test_the_head_counts_labelled_positions_only() -> None:
    """vistune's model computes logits for the loss tokens only: the head's bytes are
    HEAD_VALUES fp32 values per loss token per vocabulary entry, whatever the prompt and
    image length (counted here by hand)."""
    plan = a_plan(gradient_checkpointing=True)
    longer_answers = replace(plan, loss_tokens_per_sample=plan.loss_tokens_per_sample + 10)
    grown = memory.estimate_peak(longer_answers).total - memory.estimate_peak(plan).total
    assert grown == pytest.approx(memory.HEAD_VALUES * 4 * 10 * plan.batch_size * 32064)


def test_plan_for_training_counts_the_batch_loss_tokens(tiny_phi3v_dir) -> None:
    """The plan takes the longest labelled span of the real batch (labels shifted by one, as
    the loss sees them) and the largest trainable tensor of the prepared model."""
    import torch

    from vistune.models.families import load_vlm
    from vistune.training.config import TrainConfig

    vlm = load_vlm(str(tiny_phi3v_dir))
    for param in vlm.model.parameters():
        param.requires_grad_(False)
    vlm.model.lm_head.weight.requires_grad_(True)
    labels = torch.full((2, 12), -100)
    labels[0, 5:9] = 7  # 4 loss tokens
    labels[1, 0:7] = 7  # 7 labels, of which the first is never predicted: 6 loss tokens
    batch = {"input_ids": torch.zeros(2, 12, dtype=torch.long), "labels": labels}
    config = TrainConfig(data="unused", model="unused", output="unused", method="full")
    plan = memory.plan_for_training(vlm.model, config, "fp32", batch)
    assert plan.loss_tokens_per_sample == 6
    assert plan.largest_trainable_bytes == vlm.model.lm_head.weight.numel() * 4


def test_refuses_with_the_fixes_unless_forced() -> None:
    plan = a_plan(batch_size=64)
    device = 24 * GIB
    with pytest.raises(ConfigError) as err:
        memory.check_fits(plan, device)
    message = str(err.value)
    for fix in ("gradient_checkpointing=true", "method=qlora", "num_crops", "--force"):
        assert fix in message
    memory.check_fits(plan, device, force=True)
    memory.check_fits(plan, None)  # no accelerator: nothing to check against


def test_refusal_names_a_batch_that_fits() -> None:
    plan = a_plan(batch_size=64)
    device = 80 * GIB
    best = memory.largest_batch(plan, device)
    assert 0 < best < 64
    with pytest.raises(ConfigError, match=f"per_device_batch_size={best} "):
        memory.check_fits(plan, device)


def test_render_without_accelerator_says_so() -> None:
    text = memory.render_estimate(a_plan(), None)
    assert "memory estimate" in text
    assert "no accelerator visible" in text
    text = memory.render_estimate(a_plan(), 80 * GIB, "Fake GPU")
    assert f"largest per-device batch that fits {memory.largest_batch(a_plan(), 80 * GIB)}" in text


def test_train_prints_the_estimate_on_cpu(make_config, capsys) -> None:
    from vistune.training import run_training

    run_training(make_config(max_steps=1))
    err = capsys.readouterr().err
    assert "memory estimate" in err
    assert "no accelerator visible" in err


def test_train_refuses_when_the_gpu_is_too_small(make_config, monkeypatch, tmp_path) -> None:
    from vistune.training import run_training

    monkeypatch.setattr(memory, "visible_accelerator", lambda: ("Fake GPU", 1e6))
    with pytest.raises(ConfigError, match="--force"):
        run_training(make_config(max_steps=1))
    assert not (tmp_path / "run" / "final").exists()
    result = run_training(make_config(max_steps=1, output=str(tmp_path / "forced")), force=True)
    assert result.global_step == 1


def test_one_process_measures_each_step_as_a_fresh_process_would() -> None:
    """`run_probe_series` resets the high-water mark before each step: a step measured after
    a larger one (16 crops) reads the same peak as the same step alone in a fresh process.
    The larger step leaves a few MiB of small blocks in malloc's heap (below the mmap
    threshold: the state before the step reads 7-9 MiB higher here), which the next step
    reuses, so its peak does not move (measured: 163.4 vs 163.2 MiB; 0.6 % at full width)."""
    from vistune.training.memory_probe import run_probe_series

    def spec(grid: int) -> ProbeSpec:
        return ProbeSpec(config=small_config(), num_layers=2, grid=grid, text_tokens=256, threads=1)

    alone = run_probe(spec(2), timeout=300)
    large, after_large = run_probe_series([spec(4), spec(2)], timeout=300)
    assert large["peak_bytes"] > 1.2 * alone["peak_bytes"]  # the first step was larger
    assert after_large["peak_bytes"] == pytest.approx(alone["peak_bytes"], rel=0.03)
