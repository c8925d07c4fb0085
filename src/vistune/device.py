"""Where a model runs and in which precision: one choice shared by training and evaluation.

It sits below both (it imports only torch and vistune.errors), so evaluation, prediction and
serving pick a device the same way training does without importing the training package.
"""

from __future__ import annotations

from typing import Any, Literal

from vistune.errors import ConfigError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda"]


def resolve_precision(precision: str) -> str:
    """`auto`: bf16 on a bf16-capable GPU, fp16 on older GPUs, fp32 on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("precision: fp16 needs a CUDA GPU; use precision=fp32 (or bf16) on CPU")
    return precision


def model_load_args(device: Device, precision: Precision) -> dict[str, Any]:
    """`load_vlm` keyword arguments for a device and precision choice (GPU when available)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use device=cpu")
    on_gpu = device != "cpu" and torch.cuda.is_available()
    if not on_gpu and precision in ("auto", "fp16"):
        if precision == "fp16":
            raise ConfigError("precision: fp16 needs a CUDA GPU; use precision=fp32 on CPU")
        precision = "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    return {"dtype": dtypes[resolve_precision(precision)], "device_map": "cuda" if on_gpu else None}
