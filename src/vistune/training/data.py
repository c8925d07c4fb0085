"""Prepared dataset split -> (image, question, answer) items -> padded, masked batches.

The dataset only reads rows and opens images, so the work happens in DataLoader workers;
batching and the label mask are the model family's job (`VisionLanguageModel.collate`:
-100 on prompt, image and padding tokens, loss on the answer and its end token). Padding is
dynamic (longest row of the batch). `EpochSeededLengthSampler` groups rows of similar length
and reseeds every epoch so a resumed run sees the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler

from vistune.answer import format_answer
from vistune.data.dataset import load_split, open_image, probe_images
from vistune.errors import DataError


def format_answers(frame: pd.DataFrame, template: str, source: str = "dataset") -> list[str]:
    """The target text of every row; a row the template cannot render is a DataError."""
    answers = []
    for position, row in enumerate(frame.to_dict(orient="records")):
        try:
            answers.append(format_answer(row, template))
        except (KeyError, ValueError, TypeError) as exc:
            where = row.get("source_row", position)
            raise DataError(
                f"{source}: row {where}: answer template {template!r} cannot be filled "
                f"({type(exc).__name__}: {exc}); fix the row or the template"
            ) from exc
    return answers


class CatalogDataset(Dataset):
    """One split of a prepared dataset dir; item = dict(image, question, answer)."""

    def __init__(self, data_dir: str | Path, split: str, *, question: str, template: str):
        self.data_dir = Path(data_dir)
        self.split = split
        self.frame = load_split(self.data_dir, split).reset_index(drop=True)
        if len(self.frame) == 0:
            raise DataError(
                f"{self.data_dir / (split + '.parquet')}: the {split} split has no rows; "
                "prepare the dataset again with more rows"
            )
        self.question = question
        self.answers = format_answers(self.frame, template, source=f"{self.data_dir}/{split}")
        self.images = [str(path) for path in self.frame["image"]]
        probe_images(self.data_dir, self.images)  # a bad file stops here, not in a worker

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": open_image(self.data_dir, self.images[index]),
            "question": self.question,
            "answer": self.answers[index],
        }


@dataclass
class VlmCollator:
    """Picklable collate_fn: holds the family and the processor, never the model."""

    family: Any
    processor: Any

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.family.collate(
            self.processor,
            [item["image"] for item in items],
            [item["question"] for item in items],
            [item["answer"] for item in items],
        )
        return dict(batch)


def approximate_lengths(tokenizer: Any, dataset: CatalogDataset) -> list[int]:
    """Text-token length of each row (question + answer): what varies between rows.

    Image token counts vary only with aspect ratio, so text length is the cheap, good proxy
    for grouping; no image is opened.
    """
    texts = [f"{dataset.question} {answer}" for answer in dataset.answers]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class EpochSeededLengthSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose shuffle depends only on (seed, epoch).

    Trainer calls `set_epoch` at every epoch, including after `--resume`, so the resumed run
    replays the same order and `skip_first_batches` lands on the right batch.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        self.seed = seed
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


def answer_token_lengths(tokenizer: Any, answers: Sequence[str]) -> list[int]:
    """Tokens of each answer alone (what `max_answer_tokens` limits)."""
    return [len(ids) for ids in tokenizer(list(answers), add_special_tokens=False)["input_ids"]]
