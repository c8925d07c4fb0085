"""Phi-3-vision size and tiny-model training-step cost.

1. Parameter count of `Phi3VForCausalLM` built from the released Phi-3-vision-128k-instruct
   config on the meta device (no memory, no download), split into language model, CLIP tower
   and image projection. The released model is reported as 4.15 B parameters.
2. Forward+backward time of a tiny Phi-3-vision (random weights, CPU) at batch 1 and batch 8,
   each with one 2x2-crop image per row, for sdpa and eager attention. The ratio of per-sample
   times says how much batching buys on this machine. Same process, same model, best of N
   interleaved runs.

Usage: python benchmarks/model_size.py [--repeats 10] [--threads N]
Prints a table and writes benchmarks/results/model_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

import vistune  # noqa: F401  (registers phi3_v)
from vistune.models.phi3v import Phi3VConfig, Phi3VForCausalLM

ROOT = Path(__file__).resolve().parent
OFFICIAL_CONFIG = ROOT.parent / "tests" / "models" / "phi3v" / "official_config.json"

# A tiny model of the size FACTS.md measured as trainable on 2 CPU cores.
TINY = dict(
    vocab_size=384,
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=6,
    max_position_embeddings=1024,
    original_max_position_embeddings=1024,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    image_token_id=300,
    img_processor={"image_dim_out": 96, "num_img_tokens": 16, "model_name": "tiny"},
    vision_config={
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
    },
)
TEXT_TOKENS = 48


def official_parameter_count() -> dict[str, int]:
    config = Phi3VConfig.from_dict(json.loads(OFFICIAL_CONFIG.read_text()))
    with torch.device("meta"):
        model = Phi3VForCausalLM(config)
    vision = model.model.vision_embed_tokens
    clip = sum(p.numel() for p in vision.img_processor.parameters())
    projector = sum(p.numel() for p in vision.parameters()) - clip
    total = sum(p.numel() for p in model.parameters())
    return {
        "total": total,
        "language_model": total - clip - projector,
        "clip_vision_tower": clip,
        "projection_and_separators": projector,
    }


def tiny_batch(config: Phi3VConfig, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """One 2x2-crop image (+ global view) and TEXT_TOKENS text tokens per row."""
    g = torch.Generator().manual_seed(seed)
    crop = config.crop_size
    side = int(config.tokens_per_crop**0.5)
    n_image = (2 * 2 + 1) * config.tokens_per_crop + 1 + (2 + 1) * side
    text = torch.randint(3, 290, (batch, TEXT_TOKENS), generator=g)
    placeholders = torch.full((batch, n_image), config.image_token_id)
    ids = torch.cat([text[:, :8], placeholders, text[:, 8:]], dim=1)
    labels = ids.masked_fill(ids == config.image_token_id, -100)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(batch, 5, 3, crop, crop, generator=g),
        "image_sizes": torch.tensor([[2 * crop, 2 * crop]] * batch),
    }


def step_seconds(model: Phi3VForCausalLM, batch: dict[str, torch.Tensor]) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(**batch).loss.backward()
    return time.perf_counter() - start


def tiny_timings(repeats: int) -> list[dict]:
    """Best of `repeats` per (attention, batch size); batch 1 and batch 8 runs alternate so
    load from other processes on a shared machine hits both alike."""
    rows = []
    for attn in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = Phi3VForCausalLM(Phi3VConfig(**TINY, attn_implementation=attn)).train()
        params = sum(p.numel() for p in model.parameters())
        batches = {size: tiny_batch(model.config, size, seed=size) for size in (1, 8)}
        best = dict.fromkeys(batches, float("inf"))
        for i in range(repeats + 1):  # the first round only warms up
            for size, batch in batches.items():
                seconds = step_seconds(model, batch)
                if i:
                    best[size] = min(best[size], seconds)
        for size, batch in batches.items():
            rows.append(
                {
                    "attn": attn,
                    "batch": size,
                    "seq_len": batch["input_ids"].shape[1],
                    "params": params,
                    "step_s": best[size],
                    "per_sample_s": best[size] / size,
                }
            )
        rows[-1]["per_sample_speedup_vs_batch1"] = best[1] / (best[8] / 8)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    counts = official_parameter_count()
    timings = tiny_timings(args.repeats)

    console = Console()
    sizes = Table(title="Phi-3-vision parameters (released config, meta device)")
    sizes.add_column("part")
    sizes.add_column("parameters", justify="right")
    for part, n in counts.items():
        sizes.add_row(part, f"{n:,} ({n / 1e9:.3f} B)")
    console.print(sizes)

    steps = Table(title=f"tiny Phi-3-vision forward+backward, CPU ({torch.get_num_threads()} thr)")
    for col in ("attn", "batch", "seq len", "step ms", "per-sample ms", "batch-8 speedup"):
        steps.add_column(col, justify="right")
    for row in timings:
        speedup = row.get("per_sample_speedup_vs_batch1")
        steps.add_row(
            row["attn"],
            str(row["batch"]),
            str(row["seq_len"]),
            f"{row['step_s'] * 1e3:.1f}",
            f"{row['per_sample_s'] * 1e3:.1f}",
            f"{speedup:.2f}x" if speedup else "",
        )
    console.print(steps)

    out = ROOT / "results" / "model_size.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "official_parameters": counts,
        "tiny_config": TINY,
        "tiny_forward_backward": timings,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
