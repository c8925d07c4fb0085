"""Sharding past one GPU: what was asked for, what accelerate set up, and the full final save.

A strategy is requested in vistune's config (`fsdp`, `deepspeed`) or by an accelerate launch
config (`ACCELERATE_USE_FSDP` / `ACCELERATE_USE_DEEPSPEED`). accelerate quietly runs plain DDP
when it cannot shard on the hardware at hand (its FSDP accepts no CPU-only run), so vistune
compares the request with what the Trainer's accelerator actually set up and refuses a
mismatch instead of training something other than what was asked.

Under sharding every collective must run on every rank. `save_full_model` therefore gathers
the full state dict on all ranks (accelerate's `get_state_dict`) before rank 0 writes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from vistune.errors import ConfigError
from vistune.training.auto_map import clean_auto_maps
from vistune.training.config import TrainConfig
from vistune.training.model import has_prefix, set_adapter_base


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def requested_strategy(config: TrainConfig) -> str:
    """`fsdp`, `deepspeed` or `none` (DDP or one process), from the config or the launcher."""
    if config.fsdp.enabled or _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if config.deepspeed is not None or _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    return "none"


def layer_classes(
    model: torch.nn.Module, vision_prefixes: tuple[str, ...] = (), trained_vision: bool = True
) -> list[str]:
    """The family's repeated layers: `_no_split_modules` classes that sit in a ModuleList.

    For Phi-3-vision these are the decoder layers and the CLIP encoder layers; the image
    embedding module (also unsplittable, but one per model) stays in the root shard. Layers
    under `vision_prefixes` are left out when nothing of the vision side is trained: the
    model then skips the tower on image-free batches, and a separately sharded tower would
    all-gather on some ranks only. In the root shard every rank gathers it every step.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    found: list[str] = []
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList):
            continue
        if not trained_vision and has_prefix(path, vision_prefixes):
            continue
        for layer in module:
            name = type(layer).__name__
            if name in names and name not in found:
                found.append(name)
    return found


def vision_trained(model: torch.nn.Module, prefixes: tuple[str, ...]) -> bool:
    """True when any parameter under `prefixes` (vision tower, projector) is trained."""
    return any(p.requires_grad for n, p in model.named_parameters() if has_prefix(n, prefixes))


def sharding_arguments(config: TrainConfig, wrap_classes: list[str] | None) -> dict[str, Any]:
    """`TrainingArguments` keyword arguments for the configured strategy (empty for none)."""
    if config.deepspeed is not None:
        deepspeed = config.deepspeed
        if isinstance(deepspeed, Path):
            if not deepspeed.is_file():
                raise ConfigError(f"deepspeed: {deepspeed} is not a file; give a DeepSpeed JSON")
            deepspeed = str(deepspeed)
        return {"deepspeed": deepspeed}
    if not config.fsdp.enabled:
        return {}
    fsdp = config.fsdp
    fsdp_config: dict[str, Any] = {
        "version": fsdp.version,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": fsdp.state_dict_type,
        "cpu_offload": fsdp.offload,
        "reshard_after_forward": fsdp.reshard_after_forward,
        # FSDP's own activation checkpointing; the Trainer's re-gathers weights (one
        # all-gather more per layer in backward)
        "activation_checkpointing": config.gradient_checkpointing,
    }
    classes = fsdp.wrap_classes or wrap_classes
    if classes:
        fsdp_config["transformer_layer_cls_to_wrap"] = list(classes)
    return {"fsdp": True, "fsdp_config": fsdp_config}


def describe_strategy(config: TrainConfig, wrap_classes: list[str] | None) -> str:
    """One line for the knobs printout: the sharding the run asks for."""
    strategy = requested_strategy(config)
    if strategy == "fsdp" and config.fsdp.enabled:
        fsdp = config.fsdp
        classes = ", ".join(fsdp.wrap_classes or wrap_classes or []) or "accelerate default"
        return (
            f"FSDP{fsdp.version} (wrap {classes}; checkpoints {fsdp.state_dict_type}; "
            f"offload {'on' if fsdp.offload else 'off'}; "
            f"reshard after forward {'on' if fsdp.reshard_after_forward else 'off'})"
        )
    if strategy == "fsdp":
        return "FSDP (from the accelerate launch config)"
    if strategy == "deepspeed" and config.deepspeed is not None:
        shown = config.deepspeed if isinstance(config.deepspeed, Path) else "inline config"
        return f"DeepSpeed ({shown})"
    if strategy == "deepspeed":
        return "DeepSpeed (from the accelerate launch config)"
    return "none (DDP when launched with several processes)"


def check_launch(requested: str, args: Any) -> None:
    """FSDP needs a distributed launch (also with one GPU); say how before any weights load."""
    from transformers.training_args import ParallelMode

    if requested == "fsdp" and args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise ConfigError(
            "fsdp.enabled needs a distributed launch, one process per GPU: `accelerate launch "
            "--config_file configs/accelerate/fsdp2.yaml -m vistune.cli train ...` or "
            "`torchrun --nproc_per_node N -m vistune.cli train ...`; or set fsdp.enabled=false"
        )


def check_strategy(requested: str, accelerator: Any) -> None:
    """Refuse a run whose accelerator does not shard as requested (never fall back)."""
    from accelerate.utils import DistributedType

    actual = accelerator.distributed_type
    wanted = {"fsdp": DistributedType.FSDP, "deepspeed": DistributedType.DEEPSPEED}.get(requested)
    if wanted is None or actual == wanted:
        return
    raise ConfigError(
        f"{requested} was requested but accelerate set up {actual.value} on "
        f"{accelerator.device} ({accelerator.num_processes} process(es)): accelerate runs "
        f"{requested} only with one GPU (or other accelerator) per process, started by "
        "`accelerate launch` or `torchrun`; without one, train unsharded "
        "(fsdp.enabled=false, no deepspeed, configs/accelerate/ddp.yaml)"
    )


def save_full_model(trainer: Any, vlm: Any, base_source: str, final_dir: Path) -> None:
    """Write `final/` from a full state dict that every rank helps gather; call on all ranks.

    LoRA/QLoRA: adapter + `modules_to_save` (PEFT picks them from the full state dict) with
    the base recorded; full fine-tuning: all weights. Rank 0 writes into a temporary sibling
    folder and renames it to `final/` only once complete, so a failed save leaves no `final/`
    that looks loadable (a previous `final/` is replaced only after the new one is written).
    """
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model_wrapped)
    error: BaseException | None = None
    if accelerator.is_main_process:
        try:
            model = accelerator.unwrap_model(trainer.model)
            _write_final(model, state_dict, vlm, base_source, final_dir)
        except BaseException as exc:  # re-raised below, after the other ranks are released
            error = exc
    accelerator.wait_for_everyone()
    if error is not None:
        raise error


def _write_final(
    model: Any, state_dict: dict[str, Any], vlm: Any, base_source: str, final_dir: Path
) -> None:
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=final_dir.parent))
    try:
        if hasattr(model, "peft_config"):
            set_adapter_base(model, base_source)
        model.save_pretrained(staging, state_dict=state_dict)
        vlm.family.save_processor(vlm.processor, staging)
        # A base folder's tokenizer/processor auto_map survives save_pretrained; its code does not.
        clean_auto_maps(staging)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        staging.rename(final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
