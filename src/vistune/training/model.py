"""Load the base model and make the right parameters trainable (LoRA, QLoRA or full).

Freezing uses the family's `vision_tower_prefixes` / `projector_prefixes`, so nothing here
knows a model type. LoRA goes on the family's `default_lora_targets` unless the config names
modules; a trainable projector is saved with the adapter (`modules_to_save`); a trainable
vision tower under LoRA gets LoRA on its own linear layers.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vistune.errors import ConfigError
from vistune.models.base import VisionLanguageModel
from vistune.models.compat import peft_wrapping
from vistune.training.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class ParamCounts:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCounts(trainable, total)


def has_prefix(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def check_method_supported(config: TrainConfig) -> None:
    """QLoRA needs CUDA and bitsandbytes; say so before any weights load."""
    if config.method != "qlora":
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            "method: qlora needs a CUDA GPU (4-bit bitsandbytes kernels); "
            "use method=lora or method=full on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("method: qlora needs bitsandbytes; pip install bitsandbytes")


def quantization_config(config: TrainConfig, compute_dtype: torch.dtype) -> Any:
    """4-bit NF4 for the language model only (QLoRA).

    The vision tower, the projector and the LM head stay in `compute_dtype`: they are small,
    quantizing the tower costs accuracy, and a trained projector (modules_to_save) must hold
    float weights. The family is not known before loading, so every family's prefixes are
    listed; names a model lacks match nothing.
    """
    if config.method != "qlora":
        return None
    import re

    from transformers import BitsAndBytesConfig

    from vistune.models.families import FAMILIES

    keep = {"lm_head"}
    for family in FAMILIES:
        for prefix in (*family.vision_tower_prefixes, *family.projector_prefixes):
            keep.add(re.escape(prefix.rstrip(".")))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=sorted(keep),
    )


def freeze_by_prefix(model: torch.nn.Module, prefixes: Sequence[str], trainable: bool) -> int:
    """Set requires_grad on every parameter under `prefixes`; returns how many tensors matched."""
    matched = 0
    for name, param in model.named_parameters():
        if has_prefix(name, prefixes):
            if param.is_floating_point():
                param.requires_grad_(trainable)
            matched += 1
    return matched


def linear_module_names(model: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and has_prefix(name, prefixes)
    ]


def top_modules(model: torch.nn.Module, prefixes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Modules that own parameters under `prefixes` (for modules_to_save), and bare parameters.

    Leaf modules rather than the prefix module itself: PEFT's ModulesToSaveWrapper forwards
    attributes like `.weight` but not indexing, and model code may index a Sequential.
    """
    modules = []
    for name, module in model.named_modules():
        if has_prefix(name, prefixes) and any(True for _ in module.parameters(recurse=False)):
            modules.append(name)
    params = [
        name
        for name, _ in model.named_parameters()
        if has_prefix(name, prefixes) and name.rsplit(".", 1)[0] not in modules
    ]
    return modules, params


def prepare_model(vlm: VisionLanguageModel, config: TrainConfig) -> torch.nn.Module:
    """Freeze/unfreeze and wrap with PEFT as the config says; returns the model to train."""
    model = vlm.model
    family = vlm.family
    vision = tuple(family.vision_tower_prefixes)
    projector = tuple(family.projector_prefixes)

    if config.method == "full":
        for param in model.parameters():
            if param.is_floating_point():
                param.requires_grad_(True)
        freeze_by_prefix(model, vision, config.train_vision_tower)
        freeze_by_prefix(model, projector, config.train_projector)
        return model

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    targets = list(config.lora.target_modules or family.default_lora_targets)
    # LoRA names match by suffix; keep them off the vision tower unless it is trained.
    text_targets = [
        name
        for name, _ in model.named_modules()
        if name.split(".")[-1] in targets and not has_prefix(name, vision + projector)
    ]
    if not text_targets:
        raise ConfigError(
            f"lora.target_modules {targets}: no module of {type(model).__name__} has these names"
        )
    if config.train_vision_tower:
        text_targets += linear_module_names(model, vision)
    modules_to_save: list[str] = []
    if config.train_projector:
        modules_to_save, bare = top_modules(model, projector)
        if bare:
            logger.info("projector parameters %s are not modules; frozen under LoRA", bare)
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=text_targets,
        modules_to_save=modules_to_save or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        return get_peft_model(model, lora)


def set_adapter_base(model: torch.nn.Module, base_source: str | Path) -> None:
    """Point the adapter at the base it was trained on, so `load_vlm(adapter)` finds it."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config:
        return
    for adapter in peft_config.values():
        adapter.base_model_name_or_path = str(base_source)
