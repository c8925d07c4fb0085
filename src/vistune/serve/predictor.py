"""From a loaded model to JSON-ready predictions: the function the micro-batcher calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, parse_answer
from vistune.models.base import VisionLanguageModel


@dataclass(frozen=True)
class Prediction:
    """One answer: parsed fields, the raw text, and why parsing failed (None when it did not)."""

    title: str | None
    category: str | None
    full_price: float | None
    raw: str
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Predictor:
    """Ask every image the same question in one batched `generate` call and parse the answers."""

    vlm: VisionLanguageModel
    question: str = DEFAULT_QUESTION
    max_new_tokens: int = 64
    answer_template: str = DEFAULT_TEMPLATE

    def __call__(self, images: Sequence[Image.Image]) -> list[Prediction]:
        raws = self.vlm.generate(
            list(images), [self.question] * len(images), max_new_tokens=self.max_new_tokens
        )
        return [to_prediction(raw, self.answer_template) for raw in raws]


def to_prediction(raw: str, template: str = DEFAULT_TEMPLATE) -> Prediction:
    parsed = parse_answer(raw, template)
    return Prediction(
        title=parsed.title,
        category=parsed.category,
        full_price=parsed.price,
        raw=raw,
        error=parsed.error,
    )
