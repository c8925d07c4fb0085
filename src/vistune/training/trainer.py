"""The Hugging Face `Trainer` subclass vistune trains with, and its evaluation by generation.

Only three things differ from the stock Trainer, each because vistune's data is not a
tokenized `datasets.Dataset`: length grouping uses lengths we compute (the stock sampler
wants `input_ids` in every item), throughput is logged in samples/s and tokens/s counted from
the real batches, and each evaluation also *generates* answers for a fixed set of validation
rows (teacher-forced loss says little about whether the answer parses) and logs their metrics
and a W&B table. DDP/FSDP/DeepSpeed, checkpointing and resume stay the Trainer's.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import Trainer

from vistune.models.base import VisionLanguageModel
from vistune.training.data import CatalogDataset, EpochSeededLengthSampler

logger = logging.getLogger(__name__)


@dataclass
class GenerationEval:
    """Generate answers for the first `frame` rows of the validation split at each evaluation.

    Uses vistune.evaluation (`generate_predictions`, `compute_metrics`, `wandb_table`) so the
    numbers match `vistune evaluate`; predictions are also written to
    `RUN_DIR/eval_samples/step-N.jsonl` for people without W&B.
    """

    family: Any
    processor: Any
    source: str
    frame: pd.DataFrame
    data_dir: Path
    question: str
    template: str
    max_new_tokens: int
    batch_size: int
    out_dir: Path

    def __call__(
        self, model: torch.nn.Module, step: int, accelerator: Any = None
    ) -> dict[str, float]:
        """Generate on every rank (each its share of rows), gather, score; call on all ranks.

        Under FSDP or ZeRO-3 each forward all-gathers parameters, so a rank that skipped
        generation would leave the others waiting in a collective. Every rank therefore
        generates an equal-sized slice (the last rows repeated to fill it), with
        transformers' synced stopping so ranks run the same number of forwards; the answers
        are gathered and every rank returns the same metrics. Files and the W&B table are
        written by the main process only.
        """
        from vistune.evaluation import predictions_from_answers, wandb_table
        from vistune.evaluation.metrics import compute_metrics

        world = accelerator.num_processes if accelerator is not None else 1
        rank = accelerator.process_index if accelerator is not None else 0
        rows = shard_rows(len(self.frame), world, rank)
        answers = self._generate(model, rows, sharded=is_sharded(accelerator))
        if world > 1:
            from accelerate.utils import gather_object

            answers = gather_object(answers)
        by_row = dict(answers)
        predictions = predictions_from_answers(
            self.frame, [by_row[i] for i in range(len(self.frame))], self.template
        )
        metrics = compute_metrics(predictions)
        scalars = {
            f"eval_gen_{key}": float(value)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (isinstance(value, float) and math.isnan(value))
        }
        if accelerator is None or accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            predictions.to_json(
                self.out_dir / f"step-{step}.jsonl",
                orient="records",
                lines=True,
                force_ascii=False,
            )
            import wandb

            if wandb.run is not None:
                table = wandb_table(predictions, self.data_dir, limit=len(self.frame))
                wandb.log({"eval/generations": table, "train/global_step": step})
        return scalars

    def _generate(
        self, model: torch.nn.Module, rows: list[int], sharded: bool
    ) -> list[tuple[int, str]]:
        from vistune.evaluation import generate_predictions

        vlm = VisionLanguageModel(model, self.processor, self.family, self.source)
        was_training = model.training
        model.eval()
        try:
            with synced_generation(model, sharded):
                predictions = generate_predictions(
                    vlm,
                    self.frame.iloc[rows],
                    self.data_dir,
                    question=self.question,
                    template=self.template,
                    batch_size=self.batch_size,
                    max_new_tokens=self.max_new_tokens,
                )
        finally:
            model.train(was_training)
        return list(zip(rows, predictions["generated"].tolist(), strict=True))


def shard_rows(total: int, world: int, rank: int) -> list[int]:
    """Rank `rank`'s contiguous slice of `range(total)`, padded with the last row so every
    rank gets the same count (equal generate calls on every rank)."""
    per_rank = -(-total // world)
    return [min(rank * per_rank + i, total - 1) for i in range(per_rank)]


def is_sharded(accelerator: Any) -> bool:
    """True when parameters are sharded across ranks (FSDP, or DeepSpeed ZeRO-3)."""
    if accelerator is None or accelerator.num_processes < 2:
        return False
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


@contextmanager
def synced_generation(model: torch.nn.Module, sharded: bool) -> Iterator[None]:
    """Make `generate` keep stepping until every rank is done, for a sharded model.

    transformers syncs generation (`synced_gpus`) for ZeRO-3 and for models its own FSDP2
    loader wrapped, recognised by `_is_fsdp_managed_module`; a model sharded by accelerate
    lacks that flag, so it is set on the generating modules for the duration of the call.
    """
    from transformers import GenerationMixin

    flagged = []
    if sharded:
        for module in model.modules():
            if isinstance(module, GenerationMixin) and not getattr(
                module, "_is_fsdp_managed_module", False
            ):
                module._is_fsdp_managed_module = True
                flagged.append(module)
    try:
        yield
    finally:
        for module in flagged:
            del module._is_fsdp_managed_module


@dataclass
class _Throughput:
    samples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    #: start of the window: the first training step after the previous log, not the
    #: construction time (model set-up and data loader start are not throughput)
    since: float | None = None


class VistuneTrainer(Trainer):
    """`Trainer` + length grouping on precomputed lengths + throughput logs + generation eval."""

    def __init__(
        self,
        *args: Any,
        lengths: list[int] | None = None,
        generation_eval: GenerationEval | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.lengths = lengths
        self.generation_eval = generation_eval
        self._throughput = _Throughput()

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.lengths is not None and isinstance(dataset, CatalogDataset):
            return EpochSeededLengthSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                self.lengths,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any) -> Any:
        counter = self._throughput
        if counter.since is None:
            counter.since = time.perf_counter()
        mask = inputs.get("attention_mask")
        counter.samples += int(inputs["input_ids"].shape[0])
        counter.tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        if "labels" in inputs:
            counter.loss_tokens += int((inputs["labels"] != -100).sum())
        return super().training_step(model, inputs, *args)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        counter = self._throughput
        if "loss" in logs and counter.since is not None:
            elapsed = max(time.perf_counter() - counter.since, 1e-9)
            world = max(self.args.world_size, 1)
            logs["samples_per_second"] = round(counter.samples * world / elapsed, 3)
            logs["tokens_per_second"] = round(counter.tokens * world / elapsed, 1)
            if counter.tokens:
                logs["loss_token_share"] = round(counter.loss_tokens / counter.tokens, 4)
            self._throughput = _Throughput()
        super().log(logs, start_time)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        metrics = super().evaluate(*args, **kwargs)
        if self.generation_eval is not None:
            # every rank takes part: a sharded model all-gathers in each forward
            model = self.accelerator.unwrap_model(self.model)
            generated = self.generation_eval(model, self.state.global_step, self.accelerator)
            self.log(dict(generated))
            metrics.update(generated)
        # keep the throughput window to training time only
        self._throughput = _Throughput()
        return metrics


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
