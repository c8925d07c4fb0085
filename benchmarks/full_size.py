"""Phi-3-vision at its real geometry: memory and time per layer, 32-layer extrapolation, checks.

vistune's `Phi3VForCausalLM` is built from the released Phi-3-vision-128k-instruct config
(hidden 3072, intermediate 8192, 32 heads, vocab 32064, longrope, CLIP ViT-L/14-336), random
weights, no download. On CPU only the number of language-model layers is cut (1, 2, 3). One
training step of one batch of 2 products (a square photo each: 2x2 sub-crops at num_crops 4 =
757 image tokens, 4x4 at num_crops 16 = 2,509, plus 64 text tokens of which 32 are the
answer) is measured per configuration (`vistune.training.memory_probe`: resident-set
high-water mark above the post-import baseline, reset before each step; wall time of
forward+backward+AdamW step). One process per method and depth builds the model once and
measures both num_crops without and with gradient checkpointing. A linear fit over the
depths gives memory and time per layer and the 32-layer extrapolation; with a third depth
(4 crops, no checkpointing) the fit's largest residual is a real check of linearity.

The frozen CLIP tower's forward is measured once per crop (it is independent of the LM depth
and linear in crops); in the depth runs its output is replaced by random features of the same
shape (weights stay in memory). `--real-vision` runs the tower in every configuration.

Work runs in priority order on `--workers` processes at once (two 1-thread processes do 1.45x
the work per second of one 2-thread process on 2 cores): both methods at 1 layer, the CLIP
forward and two checks at full width (gradient checkpointing changes no gradient: LoRA, fp32,
2 layers; longrope switches from short to long factors past 4,096 positions in a real forward
pass), both methods at 2 layers, then the 3-layer runs. Work that would end past
`--budget-s` or whose predicted peak exceeds `--max-gb` is skipped and says so.

`--device cuda` (not measured in this project: no GPU was lent) runs the 32 layers in bf16
autocast with fp32 master weights, as `vistune train` does, and reports peak memory
(`torch.cuda.max_memory_allocated`), tokens/s and MFU.

Usage: python benchmarks/full_size.py [--budget-s 870] [--max-gb 16] [--workers 2]
Prints tables and writes benchmarks/results/full_size.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

from vistune.training import memory
from vistune.training.memory_probe import (
    MALLOC_ENV,
    ProbeSpec,
    image_token_count,
    run_probe_series,
)

ROOT = Path(__file__).resolve().parent
OFFICIAL_CONFIG = ROOT.parent / "tests" / "models" / "phi3v" / "official_config.json"
RESULTS = ROOT / "results" / "full_size.json"
CONFIG_ENV = "VISTUNE_FULL_SIZE_CONFIG"
CHILD_TIMEOUT_S = 1800.0
GIB = 2**30
FULL_DEPTH = 32
GRIDS = {4: 2, 16: 4}  # num_crops -> sub-crop grid side of a square product photo
#: Microsoft's published peak memory per A100 (Phi-3-vision fine-tuning recipe, ~2,443
#: tokens/sample, 16 crops, bf16, flash-attention, batch 1; full = DeepSpeed ZeRO-2).
MICROSOFT_A100_GB = {"full": 36.0, "lora": 16.0, "qlora": 10.0}
MICROSOFT_TOKENS_PER_SAMPLE = 2443
#: Dense bf16 peak FLOP/s for MFU (vendor datasheets).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


def official_config() -> dict[str, Any]:
    """The released config, or (`--config`, for a quick smoke run) another config file."""
    return json.loads(Path(os.environ.get(CONFIG_ENV, OFFICIAL_CONFIG)).read_text())


def group_specs(method: str, layers: int) -> list[ProbeSpec]:
    """The steps one process measures on one model: both num_crops, without and with
    gradient checkpointing."""
    config = official_config()
    return [
        ProbeSpec(
            config=config,
            num_layers=layers,
            method=method,
            gradient_checkpointing=checkpointing,
            grid=GRIDS[crops],
            substitute_vision=True,
        )
        for crops in (4, 16)
        for checkpointing in (False, True)
    ]


def priority_queue(max_layers: int) -> list[list[ProbeSpec] | str]:
    """Groups (one model build each) and checks, most informative first: both methods at
    0 and 1 layers (the depth fit; depth 0 is the model without layers: embeddings, image
    projection, head), the CLIP forward and the two checks, then deeper models, as much of
    each as the budget allows (the fit's residual)."""
    queue: list[list[ProbeSpec] | str] = [
        group_specs(method, layers) for layers in (0, 1) for method in ("lora", "full")
    ]
    queue += ["vision", "checkpoint_gradients", "longrope"]
    queue += [
        group_specs(method, layers)
        for layers in range(2, max_layers + 1)
        for method in ("lora", "full")
    ]
    return queue


# -- children (each runs in its own process) ------------------------------------------------
def child_vision(crops: int) -> dict[str, Any]:
    """Frozen CLIP tower forward on `crops` crops: seconds per crop and peak above baseline."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.models.phi3v.modeling_phi3v import Phi3VVisionTower
    from vistune.training.memory_probe import read_status_kib

    baseline = read_status_kib("VmRSS")
    config = Phi3VConfig.from_dict(official_config())
    tower = Phi3VVisionTower(config).eval().requires_grad_(False)
    pixels = torch.randn(crops, 3, config.crop_size, config.crop_size)
    ready = read_status_kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        tower(pixels)
    seconds = time.perf_counter() - start
    peak = read_status_kib("VmHWM")
    return {
        "crops": crops,
        "s_per_crop": seconds / crops,
        "weights_bytes": (ready - baseline) * 1024,
        "transient_bytes_per_crop": (peak - ready) * 1024 / crops,
        "feature_layers": config.vision_feature_layers,
    }


def child_checkpoint_gradients() -> dict[str, Any]:
    """LoRA, fp32, 2 layers at full width: the same step with and without gradient
    checkpointing (non-reentrant, as `vistune train`) must give the same gradients. Dropout
    stays on (the recompute must replay its masks) and LoRA B starts non-zero so every
    adapter weight gets a gradient."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import (
        build_model,
        make_batch,
        prepare,
        substitute_vision_tower,
    )

    spec = ProbeSpec(config=official_config(), num_layers=2, batch_size=1, grid=1, text_tokens=32)
    spec.answer_tokens = 16
    config = Phi3VConfig.from_dict({**spec.config, "num_hidden_layers": 2})
    model = build_model(config, seed=0)
    substitute_vision_tower(model, seed=0)
    model = prepare(model, spec).train()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    batch = make_batch(config, spec)
    grads = {}
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the same dropout masks in both runs
        substitute_vision_tower(model.base_model.model, seed=0)  # the same features too
        loss = model(**batch).loss
        loss.backward()
        grads[checkpointing] = {
            n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }
    worst_name, worst = "", 0.0
    for name, plain in grads[False].items():
        scale = plain.abs().max().item() or 1.0
        diff = (grads[True][name] - plain).abs().max().item() / scale
        if diff > worst:
            worst_name, worst = name, diff
    zero = [n for n, g in grads[False].items() if not g.abs().max().item()]
    return {
        "tokens": int(batch["attention_mask"].sum()),
        "trainable_tensors": len(grads[False]),
        "tensors_with_zero_gradient": len(zero),
        "max_relative_difference": worst,
        "worst_tensor": worst_name,
        "passed": worst < 1e-4 and not zero,
    }


def child_longrope() -> dict[str, Any]:
    """A forward pass over 4,100 positions (past original_max_position_embeddings = 4,096):
    the rotary frequencies the model used must be the long factors, scaled as derived here
    from the config file alone; a pass over 64 positions must use the short factors."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import build_model

    raw = official_config()
    config = Phi3VConfig.from_dict({**raw, "num_hidden_layers": 1})
    model = build_model(config, seed=0).eval()
    scaling = raw["rope_scaling"]
    head_dim = raw["hidden_size"] // raw["num_attention_heads"]
    original = raw["original_max_position_embeddings"]
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    expected_scale = math.sqrt(
        1 + math.log(raw["max_position_embeddings"] / original) / math.log(original)
    )
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(_module, _args, output):
        cos, sin = output
        seen[cos.shape[1]] = (cos[0].double(), sin[0].double())

    model.model.rotary_emb.register_forward_hook(record)
    result: dict[str, Any] = {"original_max_position_embeddings": original}
    # ordinary text ids: below the special ids (pad, image placeholder) of either config
    text_ids = min(raw["vocab_size"], 32000, config.pad_token_id, config.image_token_id)
    sets = {"short": scaling["short_factor"], "long": scaling["long_factor"]}

    def error_vs(factors: list[float], cos: torch.Tensor, sin: torch.Tensor) -> float:
        """Largest difference from cos/sin derived here from the config file alone."""
        inv_freq = 1.0 / (
            torch.tensor(factors, dtype=torch.float64) * raw["rope_theta"] ** exponents
        )
        positions = torch.arange(cos.shape[0], dtype=torch.float64)[:, None]
        angles = torch.cat([positions * inv_freq, positions * inv_freq], dim=-1)
        return max(
            (cos - angles.cos() * expected_scale).abs().max().item(),
            (sin - angles.sin() * expected_scale).abs().max().item(),
        )

    for length, expected in ((64, "short"), (original + 4, "long")):
        ids = torch.randint(3, text_ids, (1, length), generator=torch.Generator().manual_seed(1))
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(input_ids=ids, logits_to_keep=1).logits
        seconds = time.perf_counter() - start
        cos, sin = seen[length]
        other = "long" if expected == "short" else "short"
        result[f"positions_{length}"] = {
            "expected_factors": expected,
            # fp32 angles at ~4,100 positions carry ~4e-4 rounding; the other factor set is
            # off by far more, so 1e-3 tells them apart
            "max_abs_error_vs_independent": error_vs(sets[expected], cos, sin),
            "max_abs_error_vs_other_factors": error_vs(sets[other], cos, sin),
            "logits_finite": bool(torch.isfinite(logits).all()),
            "forward_s": seconds,
        }
    result["attention_scale"] = expected_scale
    result["passed"] = all(
        v["max_abs_error_vs_independent"] < 1e-3
        and v["max_abs_error_vs_other_factors"] > 1e-2
        and v["logits_finite"]
        for k, v in result.items()
        if k.startswith("positions_")
    )
    return result


CHILDREN = {
    "vision": lambda: child_vision(2),  # 2 crops: per-crop figures
    "checkpoint_gradients": child_checkpoint_gradients,
    "longrope": child_longrope,
}


def run_child(name: str, threads: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": str(threads)}
    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--child", name, "--threads", str(threads)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "passed": False}
    if completed.returncode != 0:
        return {"error": completed.stderr.strip()[-1500:], "passed": False}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- fits --------------------------------------------------------------------------------------
def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b x; with two points the residual is 0 by construction."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    residual = max(abs(y - (intercept + slope * x)) for x, y in zip(xs, ys, strict=True))
    return {"intercept": intercept, "slope": slope, "max_residual": residual, "points": n}


def fits(runs: list[dict[str, Any]], vision: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per configuration: per-layer memory and time and the 32-layer extrapolation from the
    line through the two deepest depths (the regime of a deep model), and the largest
    residual of the least-squares line through every depth (a linearity check: it is large
    where the peak changes phase between depths, as under checkpointing from depth 0, which
    has no layer to recompute, to depth 1)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        spec = run["spec"]
        groups.setdefault(
            (spec["method"], spec["gradient_checkpointing"], run["crops_per_sample"]), []
        ).append(run)
    out = []
    for (method, checkpointing, crops), group in sorted(groups.items()):
        depths = sorted({r["spec"]["num_layers"] for r in group})
        if len(depths) < 2:
            continue
        deepest = [r for r in group if r["spec"]["num_layers"] in depths[-2:]]
        layers = [r["spec"]["num_layers"] for r in deepest]
        peak = linear_fit(layers, [r["peak_bytes"] for r in deepest])
        step = linear_fit(layers, [r["step_s"] for r in deepest])
        every = linear_fit(
            [r["spec"]["num_layers"] for r in group], [r["peak_bytes"] for r in group]
        )
        vision_s = vision["s_per_crop"] * 2 * (crops + 1) if vision else float("nan")
        out.append(
            {
                "method": method,
                "gradient_checkpointing": checkpointing,
                "num_crops": crops,
                "tokens": group[0]["tokens"],
                "depths": depths,
                "peak_fit": peak,
                "time_fit": step,
                "peak_fit_every_depth": every,
                "peak_per_layer_gib": peak["slope"] / GIB,
                "time_per_layer_s": step["slope"],
                "peak_32_layers_gib": (peak["intercept"] + FULL_DEPTH * peak["slope"]) / GIB,
                "step_32_layers_s": step["intercept"] + FULL_DEPTH * step["slope"] + vision_s,
                "frozen_vision_s": vision_s,
            }
        )
    return out


# -- GPU path (written for a lent accelerator; not measured in this project) -----------------
def gpu_benchmark(threads: int) -> list[dict[str, Any]]:
    """32 layers, bf16 autocast over fp32 master weights (vistune train's setup), one warm-up
    and one measured step per configuration; MFU from FlopCounterMode's count."""
    from torch.utils.flop_counter import FlopCounterMode

    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import build_model, make_batch, prepare

    name = torch.cuda.get_device_name()
    peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), float("nan"))
    rows = []
    for spec in (s for method in ("lora", "full") for s in group_specs(method, FULL_DEPTH)):
        spec.substitute_vision = False  # the GPU runs the real CLIP tower
        method, checkpointing = spec.method, spec.gradient_checkpointing
        crops = spec.grid * spec.grid
        config = Phi3VConfig.from_dict(spec.config)
        try:
            model = prepare(build_model(config, 0), spec).cuda().train()
            batch = {k: v.cuda() for k, v in make_batch(config, spec).items()}
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
            # step 0 warms up and counts FLOPs (the counter slows what it
            # watches); step 1 is timed and its peak measured
            counter = FlopCounterMode(display=False)
            for i in range(2):
                if i:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    start = time.perf_counter()
                with counter if i == 0 else contextlib.nullcontext():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = model(**batch).loss
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            tokens = int(batch["attention_mask"].sum())
            flops = counter.get_total_flops()
            rows.append(
                {
                    "method": method,
                    "gradient_checkpointing": checkpointing,
                    "num_crops": crops,
                    "peak_gib": torch.cuda.max_memory_allocated() / GIB,
                    "estimate_gib": predicted_peak_gib(replace(spec, precision="bf16")),
                    "tokens_per_s": tokens / seconds,
                    "mfu": flops / seconds / peak_flops,
                    "device": name,
                }
            )
        except torch.OutOfMemoryError as err:
            rows.append(
                {
                    "method": method,
                    "gradient_checkpointing": checkpointing,
                    "num_crops": crops,
                    "error": str(err)[:200],
                }
            )
        finally:
            model = batch = optimizer = None
            torch.cuda.empty_cache()
    return rows


# -- report --------------------------------------------------------------------------------------
def print_report(result: dict[str, Any], console: Console) -> None:
    vision = result.get("vision") or {}
    if vision and "s_per_crop" in vision:
        console.print(
            f"frozen CLIP-L/14-336 forward: {vision['s_per_crop']:.1f} s per crop, "
            f"{vision['transient_bytes_per_crop'] / 2**20:.0f} MiB transient per crop, "
            f"weights {vision['weights_bytes'] / GIB:.2f} GiB"
        )
    runs = Table(title="measured training steps (CPU, fp32, batch 2, vision substituted)")
    for col in ("method", "ckpt", "crops", "layers", "tokens", "peak GiB", "step s"):
        runs.add_column(col, justify="right")
    for run in result["runs"]:
        spec = run["spec"]
        runs.add_row(
            spec["method"],
            "yes" if spec["gradient_checkpointing"] else "no",
            str(run["crops_per_sample"]),
            str(spec["num_layers"]),
            str(run["tokens"]),
            f"{run['peak_bytes'] / GIB:.2f}",
            f"{run['step_s']:.1f}",
        )
    console.print(runs)
    table = Table(
        title="per layer (two deepest depths), extrapolated to 32 layers (CPU, fp32); residual "
        "of one line through every depth"
    )
    for col in (
        "method",
        "ckpt",
        "crops",
        "GiB/layer",
        "fit resid GiB",
        "s/layer",
        "32-layer peak GiB",
        "32-layer step s",
    ):
        table.add_column(col, justify="right")
    for fit in result["fits"]:
        table.add_row(
            fit["method"],
            "yes" if fit["gradient_checkpointing"] else "no",
            str(fit["num_crops"]),
            f"{fit['peak_per_layer_gib']:.3f}",
            # with two depths a line passes through both points: no residual to show
            f"{fit['peak_fit_every_depth']['max_residual'] / GIB:.3f}"
            if len(fit["depths"]) > 2
            else "2 depths",
            f"{fit['time_per_layer_s']:.1f}",
            f"{fit['peak_32_layers_gib']:.1f}",
            f"{fit['step_32_layers_s']:.0f}",
        )
    console.print(table)
    compare = Table(title="vs Microsoft's published peak per A100 (16 crops, ~2,443 tokens/sample)")
    for col in (
        "method",
        "Microsoft GiB",
        "estimate, Microsoft's setup",
        "error",
        "estimate, vistune's setup",
    ):
        compare.add_column(col, justify="right")
    for row in result["microsoft_comparison"]:
        compare.add_row(
            row["method"],
            f"{row['microsoft_gib']:.1f} ({row['microsoft_gb']:.0f} GB)",
            f"{row['estimate_microsoft_setup_gib']:.1f}",
            f"{row['error_microsoft_setup']:+.0%}",
            f"{row['estimate_vistune_setup_gib']:.1f}",
        )
    console.print(compare)
    peaks = Table(title="32 layers, CPU fp32, batch 2: fit extrapolation (measured) / estimate")
    for col in ("method", "crops", "ckpt", "tokens/sample", "fit GiB", "estimate GiB"):
        peaks.add_column(col, justify="right")
    for row in result["peaks_32_layers"]:
        fit = row["fit_extrapolation_gib"]
        peaks.add_row(
            row["method"],
            str(row["num_crops"]),
            "yes" if row["gradient_checkpointing"] else "no",
            str(row["tokens_per_sample"]),
            f"{fit:.1f}" if fit is not None else "not measured",
            f"{row['estimate_gib']:.1f}",
        )
    console.print(peaks)
    if isinstance(result.get("gpu"), list):
        gpu = Table(title="GPU, 32 layers, bf16 autocast, batch 2: measured vs estimate")
        for col in ("method", "ckpt", "crops", "peak GiB", "estimate GiB", "tokens/s", "MFU"):
            gpu.add_column(col, justify="right")
        for row in result["gpu"]:
            ckpt = "yes" if row["gradient_checkpointing"] else "no"
            if "error" in row:
                error = row["error"][:40]
                gpu.add_row(row["method"], ckpt, str(row["num_crops"]), error, "", "", "")
                continue
            gpu.add_row(
                row["method"],
                ckpt,
                str(row["num_crops"]),
                f"{row['peak_gib']:.1f}",
                f"{row['estimate_gib']:.1f}",
                f"{row['tokens_per_s']:.0f}",
                f"{row['mfu']:.1%}",
            )
        console.print(gpu)
    for name in ("checkpoint_gradients", "longrope"):
        check = result["checks"].get(name, {})
        console.print(f"check {name}: {'PASSED' if check.get('passed') else 'FAILED'} {check}")
    for skip in result["skipped"]:
        console.print(f"skipped: {skip}")


def microsoft_setup(plan: memory.MemoryPlan, method: str) -> memory.MemoryPlan:
    """The same step as Microsoft's recipe holds it: logits at every position (its model
    computes them all; vistune only at the labelled ones), bf16 weights (its script loads
    the model in bf16; vistune keeps fp32 master weights under autocast) and, for full
    fine-tuning, DeepSpeed ZeRO-2 over 8 GPUs (fp32 master copy, AdamW states and bf16
    gradients split 8 ways). QLoRA's 4-bit part is the same in both."""
    # its weights are bf16 already: autocast makes no half-precision copies to save
    every_position = replace(
        plan,
        loss_tokens_per_sample=plan.tokens_per_sample,
        cast_copy_bytes_per_layer=0.0,
        cast_copy_bytes_other=0.0,
    )
    params = plan.weight_bytes - (plan.trainable_bytes if method != "full" else 0)
    if method == "full":
        trainable = plan.trainable_bytes / 4  # parameters
        return replace(
            every_position,
            weight_bytes=2 * plan.weight_bytes / 4 + 4 * trainable / 8,
            trainable_bytes=2 * trainable / 8,
            largest_trainable_bytes=plan.largest_trainable_bytes / 2,  # a bf16 gradient
            optimizer_states=4,  # 8 bytes of AdamW per parameter / 2 bytes of gradient
        )
    if method == "lora":
        return replace(every_position, weight_bytes=params / 2 + plan.trainable_bytes)
    return every_position


def peaks_32_layers(
    fit_rows: list[dict[str, Any]], coefficients: memory.Coefficients
) -> list[dict[str, Any]]:
    """32-layer peaks on CPU in fp32, batch 2: the depth fit's extrapolation where both depths
    were measured, else the estimate with this run's coefficients (marked as such)."""
    measured = {(f["method"], f["gradient_checkpointing"], f["num_crops"]): f for f in fit_rows}
    rows = []
    for spec in (s for method in ("lora", "full") for s in group_specs(method, FULL_DEPTH)):
        crops = spec.grid * spec.grid
        plan = memory.plan_for_probe_spec(spec)
        fit = measured.get((spec.method, spec.gradient_checkpointing, crops))
        rows.append(
            {
                "method": spec.method,
                "num_crops": crops,
                "gradient_checkpointing": spec.gradient_checkpointing,
                "tokens_per_sample": plan.tokens_per_sample,
                "fit_extrapolation_gib": fit["peak_32_layers_gib"] if fit else None,
                "estimate_gib": memory.estimate_peak(plan, coefficients).total / GIB,
            }
        )
    return rows


def microsoft_comparison(coefficients: memory.Coefficients) -> list[dict[str, Any]]:
    """Estimate at Microsoft's conditions: 16 crops, batch 1, ~2,443 tokens per sample, bf16,
    gradient checkpointing, LoRA rank 64 (the official recipe)."""
    rows = []
    for method, gb in MICROSOFT_A100_GB.items():
        plan = memory.plan_for_phi3v_config(
            official_config(),
            method=method,
            precision="bf16",
            num_crops=16,
            batch_size=1,
            gradient_checkpointing=True,
            text_tokens=MICROSOFT_TOKENS_PER_SAMPLE - image_token_count(4, 4, 144),
            lora_rank=64,
        )
        published = gb * 1e9 / GIB
        as_vistune = memory.estimate_peak(plan, coefficients).total / GIB
        setup = microsoft_setup(plan, method)
        as_microsoft = memory.estimate_peak(setup, coefficients).total / GIB
        rows.append(
            {
                "method": method,
                "microsoft_gb": gb,
                "microsoft_gib": published,
                "estimate_vistune_setup_gib": as_vistune,
                "estimate_microsoft_setup_gib": as_microsoft,
                "error_microsoft_setup": as_microsoft / published - 1,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--budget-s", type=float, default=870.0, help="start nothing that would end after"
    )
    parser.add_argument("--max-gb", type=float, default=16.0, help="skip runs predicted above")
    parser.add_argument(
        "--max-layers", type=int, default=2, choices=(1, 2, 3), help="deepest model measured"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per process")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        help="processes at once (memory: their peaks add up)",
    )
    parser.add_argument(
        "--real-vision", action="store_true", help="run the CLIP tower in every step"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: 32 layers in bf16"
    )
    parser.add_argument("--config", type=Path, help="another config.json (smoke runs)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results")
    parser.add_argument(
        "--resume", action="store_true", help="keep --out's measurements, run what it skipped"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.config:
        os.environ[CONFIG_ENV] = str(args.config.resolve())
    if args.child:
        print(json.dumps(CHILDREN[args.child]()))
        return

    console = Console()
    start = time.perf_counter()
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "budget_s": args.budget_s,
        "runs": [],
        "skipped": [],
        "checks": {},
        "gpu": "not measured (no accelerator lent to this session)",
        "config": str(args.config or OFFICIAL_CONFIG.relative_to(ROOT.parent)),
    }
    done: set[str] = set()
    if args.resume and args.out.is_file():
        # Continue an earlier invocation: keep its measurements, run only what it skipped.
        previous = json.loads(args.out.read_text())
        result.update(
            runs=previous["runs"],
            checks={k: v for k, v in previous["checks"].items() if "error" not in v},
            vision=previous.get("vision"),
            earlier_elapsed_s=previous.get("elapsed_s", 0.0)
            + previous.get("earlier_elapsed_s", 0.0),
        )
        done = {describe_run(run) for run in result["runs"]}
        done |= {f"check {name}" for name in result["checks"]}
    if args.device == "cuda":
        result["gpu"] = gpu_benchmark(args.threads)

    def plan(item: list[ProbeSpec] | str) -> list[ProbeSpec] | str | None:
        """What of `item` to run now (None: nothing), recording what is skipped and why."""
        elapsed = time.perf_counter() - start
        if isinstance(item, str):
            if describe(item) in done:
                return None
            if elapsed > args.budget_s:
                result["skipped"].append(f"check {item}: time budget {args.budget_s:.0f} s spent")
                return None
            return item
        todo = []
        for spec in item:
            spec.threads = args.threads
            spec.substitute_vision = not args.real_vision
            predicted = predicted_peak_gib(spec)
            if describe(spec) in done:
                continue
            if predicted > args.max_gb:
                result["skipped"].append(
                    f"{describe(spec)}: predicted peak {predicted:.1f} GiB > --max-gb {args.max_gb}"
                )
                continue
            todo.append(spec)
        # as much of the group (in priority order) as ends within the budget
        needed, fitting = GROUP_OVERHEAD_S, []
        for spec in todo:
            needed += predicted_step_s(spec, result["runs"])
            if elapsed + needed > args.budget_s:
                result["skipped"].append(
                    f"{describe(spec)}: would end past the time budget ({elapsed:.0f} s spent + "
                    f"about {needed:.0f} s > {args.budget_s:.0f} s)"
                )
            else:
                fitting.append(spec)
        todo = fitting
        return todo or None

    def execute(item: list[ProbeSpec] | str) -> Any:
        if isinstance(item, str):
            return run_child(item, args.threads, timeout=CHILD_TIMEOUT_S)
        try:
            return run_probe_series(item, timeout=CHILD_TIMEOUT_S)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            return err

    def save() -> None:
        """Write what is measured so far (a crash or Ctrl-C keeps it; `--resume` goes on)."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        partial.write_text(json.dumps(result, indent=2) + "\n")
        partial.replace(args.out)

    def record(item: list[ProbeSpec] | str, outcome: Any) -> None:
        if isinstance(item, str):
            if item == "vision":
                result["vision"] = outcome
            else:
                result["checks"][item] = outcome
            console.print(f"{describe(item)}: {outcome}")
        elif isinstance(outcome, Exception):
            result["skipped"] += [f"{describe(spec)}: {outcome}" for spec in item]
        else:
            for spec, run in zip(item, outcome, strict=True):
                result["runs"].append(run)
                console.print(
                    f"{describe(spec)}: peak {run['peak_bytes'] / GIB:.2f} GiB "
                    f"(predicted {predicted_peak_gib(spec):.2f}), step {run['step_s']:.1f} s"
                )
        console.print(f"elapsed {time.perf_counter() - start:.0f} s")
        save()

    # Up to --workers processes at once: a 2-core machine does 1.45x the work per second
    # with two 1-thread processes than with one 2-thread process (measured on 2 cores).
    pending = list(priority_queue(args.max_layers))
    if result.get("vision") and "error" not in result["vision"]:
        done.add("check vision")
    running: dict[Future, list[ProbeSpec] | str] = {}
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        while pending or running:
            while pending and len(running) < args.workers:
                item = plan(pending.pop(0))
                if item is not None:
                    running[pool.submit(execute, item)] = item
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                record(running.pop(future), future.result())
    result["fits"] = fits(result["runs"], result.get("vision"))
    result["coefficients"] = memory.fit_coefficients(result["runs"])
    fitted = memory.coefficients_from_fit(result["coefficients"], "this run")
    result["microsoft_comparison"] = microsoft_comparison(fitted)
    result["estimate_vs_measured"] = [
        {
            "config": describe_run(run),
            "measured_gib": run["peak_bytes"] / GIB,
            "estimate_gib": memory.estimate_peak(memory.plan_from_probe(run), fitted).total / GIB,
        }
        for run in result["runs"]
    ]
    result["peaks_32_layers"] = peaks_32_layers(result["fits"], fitted)
    result["elapsed_s"] = time.perf_counter() - start
    print_report(result, console)
    console.print(f"total {result['elapsed_s']:.0f} s; GPU: not measured unless --device cuda")
    save()
    console.print(f"wrote {args.out}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def describe(item: ProbeSpec | str) -> str:
    if isinstance(item, str):
        return f"check {item}"
    ckpt = "ckpt" if item.gradient_checkpointing else "no-ckpt"
    return f"{item.method} {item.grid * item.grid} crops {ckpt} L={item.num_layers}"


def describe_run(run: dict[str, Any]) -> str:
    return describe(ProbeSpec(**{**run["spec"], "config": {}}))


#: Interpreter start, imports and the model build of one group's process (measured: 15-20 s).
GROUP_OVERHEAD_S = 20.0


def predicted_step_s(spec: ProbeSpec, runs: list[dict[str, Any]]) -> float:
    """Seconds one step will take: the line through the same configuration's two deepest
    shallower measurements, or one scaled by depth + 1 (the head and embedding cost about a
    layer); 0 with no such measurement (the shallowest groups always run)."""
    shallower = [
        run
        for run in runs
        if run["spec"]["method"] == spec.method
        and run["spec"]["gradient_checkpointing"] == spec.gradient_checkpointing
        and run["spec"]["grid"] == spec.grid
        and run["spec"]["num_layers"] < spec.num_layers
    ]
    by_depth = {run["spec"]["num_layers"]: run["step_s"] for run in shallower}
    if len(by_depth) >= 2:  # extrapolate the line through the two deepest measurements
        (d1, t1), (d2, t2) = sorted(by_depth.items())[-2:]
        return t2 + (spec.num_layers - d2) * (t2 - t1) / (d2 - d1)
    if by_depth:
        ((depth, seconds),) = by_depth.items()
        return seconds * (spec.num_layers + 1) / (depth + 1)
    return 0.0


def predicted_peak_gib(spec: ProbeSpec) -> float:
    return memory.estimate_peak(memory.plan_for_probe_spec(spec)).total / GIB


if __name__ == "__main__":
    main()
