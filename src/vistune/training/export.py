"""Export a run's model: a PEFT adapter folder, or full weights with LoRA merged in.

The merged folder is the model family's canonical layout (for Phi-3-vision: the official
checkpoint layout, safetensors) plus processor/tokenizer files, with no `auto_map` in
config.json, so it loads with vistune and with `AutoModelForCausalLM` after `import vistune`
and never points at remote code.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from vistune.errors import ConfigError, ModelError
from vistune.models.base import VisionLanguageModel
from vistune.outputs import atomic_output_dir

ExportKind = Literal["adapter", "merged", "full"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ExportResult:
    kind: ExportKind
    out_dir: Path


def find_final(run_dir: Path) -> Path:
    """`RUN_DIR/final`, or the folder itself when it already is an adapter/model folder."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "final", run_dir):
        if (candidate / "adapter_config.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ModelError(
        f"{run_dir}: no final/ model (adapter_config.json or config.json) found; "
        "is the training run finished? (an interrupted run continues with vistune train --resume)"
    )


def check_out_dir(out_dir: Path, source: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder; choose a new folder")
    if out_dir.resolve() == source.resolve():
        raise ConfigError(f"--out {out_dir}: is the model folder itself; choose another folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir}: folder exists and is not empty; choose a new folder")


def strip_remote_code(model: torch.nn.Module) -> None:
    """Drop `auto_map` so the exported config never points at remote code."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "auto_map", None) is not None:
        config.auto_map = None
        if hasattr(config, "__dict__"):
            config.__dict__.pop("auto_map", None)


def merge_adapter(final: Path, out_dir: Path, dtype: torch.dtype) -> None:
    from vistune.models.families import load_vlm

    vlm = load_vlm(str(final), dtype=dtype)
    model = vlm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    strip_remote_code(model)
    VisionLanguageModel(model, vlm.processor, vlm.family, str(final)).save(out_dir)


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, merge: bool = False, dtype: str = "float32"
) -> ExportResult:
    """Write the run's final model to `out_dir` (adapter copy, merged weights or full copy)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    final = find_final(Path(run_dir))
    out_dir = Path(out_dir)
    check_out_dir(out_dir, final)
    is_adapter = (final / "adapter_config.json").is_file()
    kind: ExportKind = "merged" if is_adapter and merge else "adapter" if is_adapter else "full"
    # Written next to out_dir and renamed into place: a failed export leaves no half folder.
    with atomic_output_dir(out_dir, (), "model export") as work:
        if is_adapter and merge:
            merge_adapter(final, work, DTYPES[dtype])
        else:
            shutil.copytree(final, work, dirs_exist_ok=True)
    return ExportResult(kind, out_dir)
