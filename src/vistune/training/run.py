"""`run_training`: the training recipe, top to bottom.

check config -> data -> base model -> trainable parameters -> knobs printout -> trackers ->
Trainer -> train (or resume) -> final model in RUN_DIR/final -> artifact. Each step is a small
function in this package; this file only orders them.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import set_seed

from vistune.device import resolve_precision
from vistune.errors import ConfigError
from vistune.training import memory
from vistune.training.config import TrainConfig
from vistune.training.data import (
    CatalogDataset,
    VlmCollator,
    answer_token_lengths,
    approximate_lengths,
    format_answers,
)
from vistune.training.distributed import (
    check_launch,
    check_strategy,
    describe_strategy,
    layer_classes,
    requested_strategy,
    save_full_model,
    sharding_arguments,
    vision_trained,
)
from vistune.training.knobs import describe_batch, render_knobs
from vistune.training.model import (
    check_method_supported,
    count_parameters,
    prepare_model,
    quantization_config,
)
from vistune.training.trainer import GenerationEval, VistuneTrainer, write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard"}


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path
    global_step: int
    train_loss: float


def check_trackers(config: TrainConfig) -> None:
    for tracker in config.trackers:
        package = _TRACKER_PACKAGES.get(tracker)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"report_to: {tracker} is requested but the {package} package is not installed; "
                f"pip install {package}, or drop it from report_to"
            )


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """Newest `checkpoint-N` holding trainer_state.json (the Trainer writes it last).

    A run killed while saving leaves a partial folder; resuming from it would crash, so it is
    skipped (and overwritten when the resumed run reaches that step again).
    """
    candidates = sorted(
        (p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "trainer_state.json").is_file():
            return candidate
        logger.warning("%s is incomplete (interrupted while saving); skipping it", candidate)
    return None


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Refuse to mix two runs in one folder; find the checkpoint to resume from."""
    if resume:
        checkpoint = last_complete_checkpoint(run_dir) if run_dir.is_dir() else None
        if checkpoint is None:
            raise ConfigError(
                f"{run_dir}: no complete checkpoint-* to resume from; run without --resume"
            )
        return checkpoint
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output {run_dir}: exists and is not a folder; choose a folder")
    if run_dir.is_dir() and (any(run_dir.glob("checkpoint-*")) or (run_dir / "final").exists()):
        raise ConfigError(
            f"{run_dir}: already holds a run (checkpoint-*/final); pass --resume to continue it "
            "or choose another --output"
        )
    return None


def load_eval_dataset(config: TrainConfig) -> CatalogDataset | None:
    """The validation split, or None (with a warning) when the dataset has none or it is empty."""
    from vistune.data.dataset import load_split

    if not (Path(config.data) / "validation.parquet").is_file():
        logger.warning("%s has no validation split: evaluation is off", config.data)
        return None
    if len(load_split(config.data, "validation")) == 0:
        logger.warning("%s: the validation split is empty: evaluation is off", config.data)
        return None
    return CatalogDataset(
        config.data, "validation", question=config.question, template=config.answer_template
    )


def tokenizer_corpus(config: TrainConfig) -> list[str]:
    """All answers of all splits plus the question: the tiny tokenizer must cover them."""
    from vistune.data.dataset import load_split

    corpus = [config.question]
    for split in SPLITS:
        if (Path(config.data) / f"{split}.parquet").is_file():
            frame = load_split(config.data, split)
            corpus += format_answers(frame, config.answer_template, source=f"{config.data}/{split}")
    return corpus


def load_base(config: TrainConfig, run_dir: Path, args: Any, compute_dtype: torch.dtype):
    """The base model: built tiny into RUN_DIR/base_model, or loaded from folder / hub id."""
    from vistune.models.families import load_vlm

    source: str | Path = config.model
    if config.model == "tiny":
        from vistune.models.tiny import build_tiny_phi3v

        source = (run_dir / "base_model").resolve()
        with args.main_process_first(desc="build tiny model"):
            if not (source / "config.json").is_file():
                build_tiny_phi3v(
                    source, seed=config.seed, corpus=tokenizer_corpus(config), **config.tiny
                )
    device_map = None
    if config.method == "qlora":
        device_map = {"": torch.cuda.current_device()}
    vlm = load_vlm(
        str(source),
        dtype=compute_dtype if config.method == "qlora" else torch.float32,
        device_map=device_map,
        num_crops=config.num_crops,
        quantization_config=quantization_config(config, compute_dtype),
    )
    return vlm, str(source)


def check_answer_lengths(config: TrainConfig, dataset: CatalogDataset, tokenizer: Any) -> list[int]:
    lengths = answer_token_lengths(tokenizer, dataset.answers)
    too_long = [i for i, n in enumerate(lengths) if n >= config.max_answer_tokens]
    if too_long:
        first = too_long[0]
        raise ConfigError(
            f"max_answer_tokens={config.max_answer_tokens}: {len(too_long)} train answers are "
            f"longer (longest {max(lengths)} tokens, e.g. row {first}: "
            f"{dataset.answers[first]!r}); raise max_answer_tokens"
        )
    return lengths


def training_arguments(
    config: TrainConfig,
    run_dir: Path,
    precision: str,
    has_eval: bool,
    sharding: dict[str, Any] | None = None,
):
    """The Trainer's arguments; `sharding` adds `fsdp`/`fsdp_config` or `deepspeed`."""
    from transformers import TrainingArguments

    # Frozen parameters are not DDP's concern (only trainable ones are reduced), and the model
    # runs its vision tower on a dummy crop when a batch has no image. A trained vision tower
    # still leaves its last layers unused (features come from layer -2), so DDP must look for
    # unused parameters then.
    find_unused = config.train_vision_tower
    evaluate = has_eval and config.eval_steps is not None
    warmup: float = config.warmup_steps if config.warmup_steps is not None else config.warmup_ratio
    sharding = sharding or {}
    # under FSDP, activation checkpointing is FSDP's own (set in fsdp_config)
    checkpointing = config.gradient_checkpointing and "fsdp" not in sharding
    return TrainingArguments(
        output_dir=str(run_dir),
        run_name=config.wandb.name or run_dir.name,
        seed=config.seed,
        data_seed=config.seed,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.trackers or "none",
        remove_unused_columns=False,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=find_unused,
        disable_tqdm=True,
        **sharding,
    )


def log_final_artifact(run: Any, final_dir: Path, method: str) -> None:
    """Upload the final adapter/model to W&B, only when the run is online."""
    import wandb

    if run is None or run.settings.mode != "online":
        return
    artifact = wandb.Artifact(
        name=f"model-{run.id}", type="model", metadata={"method": method, "final": True}
    )
    artifact.add_dir(str(final_dir))
    run.log_artifact(artifact, aliases=["final"])


def run_training(config: TrainConfig, resume: bool = False, force: bool = False) -> TrainResult:
    """Train as `config` says; returns where the model went and how far it got.

    `force` trains even when the memory estimate says the step does not fit the GPU."""
    from vistune.tracking import init_wandb

    run_dir = Path(config.output)
    check_method_supported(config)
    check_trackers(config)
    precision = resolve_precision(config.precision)
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    checkpoint = check_run_dir(run_dir, resume)
    if config.method != "full" and config.model == "tiny":
        logger.warning(
            "method=%s on the random-init tiny model barely learns (embeddings and head stay "
            "frozen); use method=full for the tiny model",
            config.method,
        )

    train_set = CatalogDataset(
        config.data, "train", question=config.question, template=config.answer_template
    )
    eval_set = load_eval_dataset(config)
    args = training_arguments(config, run_dir, precision, eval_set is not None)
    check_launch(requested_strategy(config), args)
    main = args.process_index == 0
    console = Console(stderr=True, highlight=False)
    if main:
        config.save(run_dir / "config.yaml")

    vlm, base_source = load_base(config, run_dir, args, compute_dtype)
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    answer_lengths = check_answer_lengths(config, train_set, tokenizer)
    # LoRA initialises its A matrices from the global RNG: seed it, or the start point depends
    # on whatever ran before in this process (and a rerun or a 1-vs-N-process run differ)
    set_seed(config.seed)
    model = prepare_model(vlm, config)
    vision = (*vlm.family.vision_tower_prefixes, *vlm.family.projector_prefixes)
    wrap_classes = layer_classes(
        vlm.model, tuple(vlm.family.vision_tower_prefixes), vision_trained(vlm.model, vision)
    )
    sharding = sharding_arguments(config, wrap_classes)
    if sharding:
        args = training_arguments(config, run_dir, precision, eval_set is not None, sharding)
    collator = VlmCollator(vlm.family, vlm.processor)

    sample_batch = collator([train_set[i] for i in range(min(len(train_set), 8))])
    knobs = describe_batch(
        sample_batch, tokenizer, getattr(vlm.model.config, "image_token_id", None)
    )
    params = count_parameters(model)
    if main:
        image_processor = getattr(vlm.processor, "image_processor", None)
        crops = config.num_crops or getattr(image_processor, "num_crops", None)
        console.print(
            render_knobs(
                config,
                params,
                knobs,
                answer_lengths,
                precision,
                args.world_size,
                crops,
                strategy=describe_strategy(config, wrap_classes),
            ),
            markup=False,
        )
        write_json(
            run_dir / "knobs.json",
            {**knobs.to_dict(), "trainable_params": params.trainable, "params": params.total},
        )
    memory_plan = memory.plan_for_training(
        model, config, precision, sample_batch, vlm.family.vision_tower_prefixes
    )
    device_name, device_bytes = memory.visible_accelerator()
    if main:
        console.print(memory.render_estimate(memory_plan, device_bytes, device_name), markup=False)
        write_json(run_dir / "memory_estimate.json", memory.estimate_record(memory_plan))
    memory.check_fits(memory_plan, device_bytes, force=force)

    run = None
    if main and "wandb" in config.trackers:
        run = init_wandb(
            run_dir,
            project=config.wandb.project,
            name=config.wandb.name or run_dir.name,
            config=config.model_dump(mode="json"),
            job_type="train",
        )
        run.config.update({"knobs": knobs.to_dict(), "trainable_params": params.trainable})

    generation_eval = None
    if eval_set is not None and config.eval_generate_samples > 0:
        generation_eval = GenerationEval(
            family=vlm.family,
            processor=vlm.processor,
            source=base_source,
            frame=eval_set.frame.head(config.eval_generate_samples),
            data_dir=Path(config.data),
            question=config.question,
            template=config.answer_template,
            max_new_tokens=config.max_answer_tokens,
            batch_size=config.eval_batch_size,
            out_dir=run_dir / "eval_samples",
        )
    trainer = VistuneTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=vlm.processor,
        lengths=approximate_lengths(tokenizer, train_set) if config.group_by_length else None,
        generation_eval=generation_eval,
    )
    check_strategy(requested_strategy(config), trainer.accelerator)
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        final_dir = run_dir / "final"
        save_full_model(trainer, vlm, base_source, final_dir)
        if main:
            log_final_artifact(run, final_dir, config.method)
        trainer.accelerator.wait_for_everyone()
    finally:
        if run is not None:
            run.finish()
    return TrainResult(
        run_dir=run_dir,
        final_dir=final_dir,
        global_step=output.global_step,
        train_loss=float(output.training_loss),
    )
