"""`TrainConfig`: the one typed schema behind `vistune train` (YAML file + `--set` + flags).

Every knob that changes what the model sees or how it learns lives here, with a choice list
where one exists, so a typo in a YAML key or value fails before any weights load. The
resolved config is written to `RUN_DIR/config.yaml`; `vistune train --config
RUN_DIR/config.yaml` repeats the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE
from vistune.config import VistuneConfig

Method = Literal["lora", "qlora", "full"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
Tracker = Literal["wandb", "mlflow", "tensorboard", "none"]


class LoraSection(VistuneConfig):
    """LoRA adapter shape. `target_modules: null` means the model family's defaults
    (Phi-3-vision: qkv_proj, o_proj, gate_up_proj, down_proj)."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None


FsdpStateDict = Literal["SHARDED_STATE_DICT", "FULL_STATE_DICT"]


class FsdpSection(VistuneConfig):
    """Fully sharded data parallel (torch FSDP2 through accelerate); off unless `enabled`.

    Needs an accelerator device per process (accelerate's FSDP accepts no CPU-only run;
    vistune refuses such a run instead of letting accelerate fall back to DDP).
    `wrap_classes: null` shards the family's repeated layers: the decoder layers and the
    vision-encoder layers (Phi-3-vision: Phi3DecoderLayer, CLIPEncoderLayer).
    `state_dict_type` is the layout of `checkpoint-N` (sharded: one file per rank, fast;
    full: gathered on rank 0); `final/` is always a full, loadable model.
    """

    enabled: bool = False
    version: Literal[2] = 2
    wrap_classes: list[str] | None = None
    state_dict_type: FsdpStateDict = "SHARDED_STATE_DICT"
    offload: bool = False
    reshard_after_forward: bool = True


class WandbSection(VistuneConfig):
    """W&B run naming; the mode (online/offline) is decided by `vistune.tracking`."""

    project: str = "vistune"
    name: str | None = None


class TrainConfig(VistuneConfig):
    """Everything `vistune train` needs; see docs in the issue "Training with W&B"."""

    # what to train on, what to start from, where to write
    data: Path
    model: str
    output: Path

    # what is trained
    method: Method = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    train_vision_tower: bool = False
    train_projector: bool = True

    # optimisation
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    warmup_steps: int | None = Field(None, ge=0)
    weight_decay: float = Field(0.01, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    per_device_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)

    # what the model sees
    question: str = DEFAULT_QUESTION
    answer_template: str = DEFAULT_TEMPLATE
    num_crops: int | None = Field(None, ge=1)
    max_answer_tokens: int = Field(96, ge=1)

    # numerics and memory
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0

    # cadence
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(100, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(3, ge=1)
    eval_generate_samples: int = Field(16, ge=0)
    eval_batch_size: int = Field(8, ge=1)

    # sharding past one GPU (see README "More than one GPU"); none means DDP or one process
    fsdp: FsdpSection = Field(default_factory=FsdpSection)
    #: DeepSpeed config: a JSON file path or the config itself as a mapping
    deepspeed: Path | dict[str, Any] | None = None

    # tracking
    report_to: list[Tracker] = Field(default_factory=lambda: ["wandb"])
    wandb: WandbSection = Field(default_factory=WandbSection)

    # data loading
    dataloader_workers: int = Field(2, ge=0)
    group_by_length: bool = False

    # size knobs for `build_tiny_phi3v` when model == "tiny"
    tiny: dict[str, Any] = Field(default_factory=dict)

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_trackers(cls, value: Any) -> Any:
        """Accept `wandb,tensorboard` (CLI) as well as a YAML list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("answer_template")
    @classmethod
    def _template_has_fields(cls, value: str) -> str:
        if "{" not in value:
            raise ValueError("the answer template must reference row fields, e.g. {title}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError("report_to: 'none' cannot be combined with other trackers")
        if self.fsdp.enabled and self.deepspeed is not None:
            raise ValueError("fsdp.enabled and deepspeed cannot both be set; choose one")
        return self

    @property
    def trackers(self) -> list[str]:
        """Trackers to pass to transformers (empty for `none`)."""
        return [t for t in self.report_to if t != "none"]
