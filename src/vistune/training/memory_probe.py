"""Measure one training step's peak host memory and time for a Phi-3-vision geometry.

Run in a fresh process (`python -m vistune.training.memory_probe JSON-LIST`), which builds
the model once and measures one step per configuration of the list. A step's peak is the
kernel's resident-set high-water mark (VmHWM, reset just before the step) minus the anonymous
memory after imports and minus the file-backed pages mapped by the end of the step, so it counts
every byte torch allocated (weights, gradients, AdamW states, activations, temporaries) and
nothing a previous configuration left behind. Library code paged in during the step is
file-backed and left out: how much of it the kernel maps depends on the page cache (a fresh
install measured 30 MB more than a warm one at a 0.3 GiB test geometry). glibc is told to
serve large blocks with mmap (`MALLOC_MMAP_THRESHOLD_`, set by `run_probe`), so a freed
activation goes back to the kernel and the high-water mark tracks live tensors, the way a GPU
allocator's `max_memory_allocated` does.

The step is the one `vistune train` runs: vistune's own `prepare_model` (LoRA on the family's
targets with the projector trained, or full fine-tuning with the vision tower frozen), AdamW
states created beforehand (so the measured step is a steady-state step, not the first one),
forward, backward, optimizer step. `benchmarks/full_size.py` drives it at full width;
`tests/training/test_memory.py` at a small geometry to check the estimate in
`vistune.training.memory`.

`substitute_vision=True` replaces the frozen CLIP tower's output by fixed random features of
the right shape: its weights stay in memory, but its forward (about 1.4 TFLOP per four crops,
which a small CPU cannot afford once per configuration) is measured separately per crop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "ProbeSpec",
    "image_token_count",
    "measure_series",
    "read_status_kib",
    "reset_peak",
    "run_probe",
    "run_probe_series",
]

#: glibc: serve blocks >= 128 KiB with mmap and keep that threshold fixed (no dynamic raise),
#: so freed tensors leave the resident set at once; back those blocks with transparent huge
#: pages where the kernel allows (glibc >= 2.35; older glibc ignores it), which cuts the page
#: faults of that fresh memory (12 % of a full-width step's time here) and measures the same
#: peak (3.314 vs 3.313 GiB).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
}


@dataclass
class ProbeSpec:
    """One configuration to measure. `config` is a Phi3VConfig dict (official or small)."""

    config: dict[str, Any]
    num_layers: int
    method: str = "lora"  # lora | full
    gradient_checkpointing: bool = False
    batch_size: int = 2
    grid: int = 2  # sub-crop grid side of each (square) product photo: 2 -> 4 crops, 4 -> 16
    text_tokens: int = 64  # chat template, question and answer around the image
    answer_tokens: int = 32  # labelled tokens at the end of each row
    substitute_vision: bool = False
    lora_rank: int = 16
    precision: str = "fp32"  # fp32 | bf16 (CPU autocast over fp32 weights, as `vistune train`)
    threads: int | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def read_status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM, RssAnon, RssFile, RssShmem)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def image_token_count(grid_rows: int, grid_cols: int, tokens_per_crop: int) -> int:
    """Image tokens of one photo in the official "sub_glb" layout: the sub-crop grid with a
    separator after each row, the global separator, the global view with row separators."""
    side = int(tokens_per_crop**0.5)
    sub = (grid_rows * side) * (grid_cols * side + 1)
    return sub + 1 + side * (side + 1)


def build_model(config: Any, seed: int):
    """Random weights without transformers' (slow, for 4 B parameters) initialisers: uniform
    values touch every page, which is all a memory and speed measurement needs."""
    import torch
    from transformers.initialization import no_init_weights

    from vistune.models.phi3v import Phi3VForCausalLM

    with no_init_weights():
        model = Phi3VForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.02, 0.02, generator=generator)
    return model


def make_batch(config: Any, spec: ProbeSpec) -> dict[str, Any]:
    """`batch_size` products, each one square photo cut into grid x grid crops."""
    import torch

    generator = torch.Generator().manual_seed(spec.seed + 1)
    n_image = image_token_count(spec.grid, spec.grid, config.tokens_per_crop)
    rows = []
    for _ in range(spec.batch_size):
        high = min(config.vocab_size, 32000)
        text = torch.randint(3, high, (spec.text_tokens,), generator=generator)
        placeholders = torch.full((n_image,), config.image_token_id)
        rows.append(torch.cat([text[:8], placeholders, text[8:]]))
    input_ids = torch.stack(rows)
    labels = torch.full_like(input_ids, -100)
    labels[:, -spec.answer_tokens :] = input_ids[:, -spec.answer_tokens :]
    crop = config.crop_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": torch.randn(
            spec.batch_size, spec.grid * spec.grid + 1, 3, crop, crop, generator=generator
        ),
        "image_sizes": torch.tensor([[spec.grid * crop, spec.grid * crop]] * spec.batch_size),
    }


def substitute_vision_tower(model: Any, seed: int) -> None:
    """Make the (frozen) CLIP tower return fixed random features of its real output shape."""
    import torch

    tower = model.model.vision_embed_tokens.img_processor
    vision = model.config.vision_config
    tokens = 1 + (vision.image_size // vision.patch_size) ** 2
    generator = torch.Generator().manual_seed(seed + 2)

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            pixel_values.shape[0], tokens, vision.hidden_size, generator=generator
        ).to(pixel_values.dtype)

    tower.forward = forward


def prepare(model: Any, spec: ProbeSpec):
    """vistune's own parameter setup for `spec.method` (vision tower frozen)."""
    from vistune.models.base import VisionLanguageModel
    from vistune.models.families import Phi3VFamily
    from vistune.training.config import TrainConfig
    from vistune.training.model import prepare_model

    train_config = TrainConfig(
        data=Path("unused"),
        model="probe",
        output=Path("unused"),
        method=spec.method,
        lora={"rank": spec.lora_rank, "alpha": 2.0 * spec.lora_rank},
        gradient_checkpointing=spec.gradient_checkpointing,
    )
    if spec.num_layers == 0 and spec.method == "lora":
        return _lora_without_layers(model)
    vlm = VisionLanguageModel(model, None, Phi3VFamily(), "probe")
    prepared = prepare_model(vlm, train_config)
    if spec.gradient_checkpointing:
        prepared.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    return prepared


def _lora_without_layers(model: Any):
    """LoRA's setup on a model with no language-model layer (nothing for adapters to target):
    everything frozen but the image projector, which LoRA trains, with a frozen copy of it
    held as PEFT's modules_to_save holds the original. The depth-0 point of the depth fit:
    embeddings, image projection, final norm, head and loss, without layers."""
    import copy

    from vistune.models.families import Phi3VFamily
    from vistune.training.model import top_modules

    prefixes = Phi3VFamily.projector_prefixes
    model.requires_grad_(False)
    modules, _ = top_modules(model, prefixes)
    for name in modules:
        module = model.get_submodule(name)
        # PEFT keeps the original next to the trained copy: hold a frozen copy likewise
        module.register_module("_original", copy.deepcopy(module).requires_grad_(False))
        for param in module.parameters(recurse=False):
            param.requires_grad_(True)
    return model


def reset_peak() -> None:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current resident set.

    Linux >= 4.0 (`clear_refs` value 5): lets one process measure several steps after one
    model build, each peak from the state just before its step.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as err:
        raise RuntimeError(
            f"cannot reset the peak resident set ({err}); measure one configuration per "
            "process (run_probe with one spec)"
        ) from err


#: Settings every spec of one series shares: they decide the model that is built once.
SERIES_KEYS = ("config", "num_layers", "method", "lora_rank", "seed", "substitute_vision")


def measure_series(specs: list[ProbeSpec]) -> list[dict[str, Any]]:
    """Build and prepare one model, then time one steady-state training step per spec.

    The specs may differ in batch geometry (crops, batch, text) and gradient checkpointing,
    which is switched on the same model; everything in `SERIES_KEYS` must agree. Before
    each step the high-water mark is reset (`reset_peak`), so each peak is that step's own;
    `ready_bytes` per step shows that nothing a previous step left behind is counted.
    """
    import gc

    import torch

    from vistune.models.families import Phi3VFamily
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory import linear_weight_bytes

    first = specs[0]
    for spec in specs[1:]:
        differing = [k for k in SERIES_KEYS if getattr(spec, k) != getattr(first, k)]
        if differing:
            raise ValueError(f"one series needs the same {differing} in every spec")
    if first.threads:
        torch.set_num_threads(first.threads)
    baseline_kib = read_status_kib("RssAnon")
    config = Phi3VConfig.from_dict({**first.config, "num_hidden_layers": first.num_layers})
    start = time.perf_counter()
    model = build_model(config, first.seed)
    if first.substitute_vision:
        substitute_vision_tower(model, first.seed)
    model = prepare(model, replace(first, gradient_checkpointing=False)).train()
    build_s = time.perf_counter() - start
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    model_figures = {
        "geometry": {"hidden_size": config.hidden_size, "vocab_size": config.vocab_size},
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in trainable),
        "weight_bytes": sum(p.numel() * p.element_size() for p in params),
        "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "largest_trainable_bytes": max(p.numel() * p.element_size() for p in trainable),
        "linear_weight_bytes": linear_weight_bytes(model, Phi3VFamily.vision_tower_prefixes),
        "baseline_bytes": baseline_kib * 1024,
        "build_s": build_s,
    }
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, foreach=False)
    # Create AdamW's states now (zero gradients move nothing), so each measured step carries
    # them as every step after the first does.
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    results = []
    for spec in specs:
        if spec.gradient_checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            model.activation_checkpointing_disable()
        batch = make_batch(config, spec)
        gc.collect()
        reset_peak()
        ready_kib = read_status_kib("RssAnon")
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.precision == "bf16"):
            loss = model(**batch).loss
        forward_s = time.perf_counter() - start
        loss.backward()
        backward_s = time.perf_counter() - start - forward_s
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s = time.perf_counter() - start
        file_backed_kib = read_status_kib("RssFile") + read_status_kib("RssShmem")
        peak_kib = read_status_kib("VmHWM") - file_backed_kib
        tokens = int(batch["attention_mask"].sum())
        results.append(
            {
                "spec": asdict(spec) | {"config": None},
                "tokens": tokens,
                "loss_tokens": int((batch["labels"][:, 1:] != -100).sum()),
                "tokens_per_sample": tokens // spec.batch_size,
                "crops_per_sample": spec.grid * spec.grid,
                **model_figures,
                "pixel_bytes": batch["pixel_values"].numel() * batch["pixel_values"].element_size(),
                "ready_bytes": (ready_kib - baseline_kib) * 1024,
                "peak_bytes": (peak_kib - baseline_kib) * 1024,
                "forward_s": forward_s,
                "backward_s": backward_s,
                "step_s": step_s,
                "loss": float(loss.detach()),
                "threads": torch.get_num_threads(),
                "position_in_process": len(results),
            }
        )
        loss = batch = None
    return results


def run_probe(spec: ProbeSpec, timeout: float | None = None) -> dict[str, Any]:
    """Measure `spec` in a fresh interpreter (its own high-water mark) and return the result."""
    return run_probe_series([spec], timeout=timeout)[0]


def run_probe_series(specs: list[ProbeSpec], timeout: float | None = None) -> list[dict[str, Any]]:
    """Measure `specs` (one model, see `measure_series`) in a fresh interpreter."""
    env = {**os.environ, **MALLOC_ENV, "HF_HUB_OFFLINE": "1"}
    if specs[0].threads:
        env["OMP_NUM_THREADS"] = str(specs[0].threads)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "vistune.training.memory_probe",
            json.dumps([asdict(spec) for spec in specs]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"memory probe failed (exit {completed.returncode}) for {specs[0].method} "
            f"L={specs[0].num_layers}: {completed.stderr.strip()[-2000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    specs = [ProbeSpec(**item) for item in json.loads(argv[0])]
    print(json.dumps(measure_series(specs)))


if __name__ == "__main__":
    main(sys.argv[1:])
