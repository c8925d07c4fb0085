"""From a loaded model to JSON-ready predictions: the function the micro-batcher calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, parse_answer
from vistune.config import read_yaml
from vistune.models.base import VisionLanguageModel

#: Generation length when neither the run's config nor the user gives one.
DEFAULT_MAX_NEW_TOKENS = 64


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
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
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


def run_prompt_settings(model: str) -> dict[str, Any]:
    """The question, answer format and length a run was trained with, when `model` is a run dir.

    A run dir holds the resolved training config (`config.yaml`); serving with the same
    question the model was trained on matters more than any other knob.
    """
    config_path = Path(model) / "config.yaml"
    if not config_path.is_file():
        return {}
    data = read_yaml(config_path)
    settings: dict[str, Any] = {}
    if isinstance(data.get("question"), str):
        settings["question"] = data["question"]
    if isinstance(data.get("answer_template"), str):
        settings["answer_template"] = data["answer_template"]
    if isinstance(data.get("max_answer_tokens"), int):
        settings["max_new_tokens"] = data["max_answer_tokens"]
    return settings
