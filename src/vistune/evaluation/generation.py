"""Generate answers for a split and line them up with the truth, one row per product.

Generation goes through `VisionLanguageModel.generate` (greedy, KV-cached, left-padded
batches), so evaluation, training's periodic evaluation, `vistune predict` and the server all
decode the same way. Nothing here writes files: training calls it on a validation subset at
every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vistune.answer import format_answer, parse_answer, template_spec
from vistune.evaluation.metrics import price_errors

#: Fill of the image ablation: mid grey, the same size as the real image so the prompt has
#: the same number of image tokens and only the pixels differ.
BLANK_GREY = (128, 128, 128)

#: Columns of a predictions frame, in order.
PREDICTION_COLUMNS = (
    "source_row",
    "image",
    "expected",
    "generated",
    "true_title",
    "true_category",
    "true_price",
    "pred_title",
    "pred_category",
    "pred_price",
    "parse_ok",
    "parse_error",
    "abs_error",
    "ape",
)


def blank_like(image: Image.Image) -> Image.Image:
    """A uniform grey RGB image of the same size (the image ablation's input)."""
    return Image.new("RGB", image.size, BLANK_GREY)


def generate_predictions(
    vlm: Any,
    frame: pd.DataFrame,
    data_dir: str | Path,
    *,
    question: str,
    template: str,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    blank_image: bool = False,
    show_progress: bool = False,
) -> pd.DataFrame:
    """Answer every row of a prepared split and parse the answers (see PREDICTION_COLUMNS).

    `frame` has the prepared columns (`title`, `category3_code`, `full_price`, `image`,
    `source_row`); images are read from `data_dir`. With `blank_image=True` every image is
    replaced by a grey one of the same size: the same model and prompts without the picture.
    """
    from vistune.data.dataset import open_image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    template_spec(template)  # fail on an unparseable template before generating anything
    data_dir = Path(data_dir)
    generated: list[str] = []
    label = "blank-image ablation" if blank_image else "generating"
    with progress_bar(len(frame), label, show_progress) as advance:
        for start in range(0, len(frame), batch_size):
            batch = frame.iloc[start : start + batch_size]
            images = [open_image(data_dir, str(path)) for path in batch["image"]]
            if blank_image:
                images = [blank_like(image) for image in images]
            answers = vlm.generate(images, [question] * len(images), max_new_tokens=max_new_tokens)
            if len(answers) != len(images):
                raise RuntimeError(
                    f"model returned {len(answers)} answers for {len(images)} images"
                )
            generated.extend(answers)
            advance(len(images))
    return predictions_from_answers(frame, generated, template)


def predictions_from_answers(
    frame: pd.DataFrame, generated: Sequence[str], template: str
) -> pd.DataFrame:
    """Line generated answers up with the truth of `frame` and parse them (pure, no model)."""
    if len(generated) != len(frame):
        raise ValueError(f"{len(generated)} answers for {len(frame)} rows")
    parsed = [parse_answer(text, template) for text in generated]
    records = frame.to_dict("records")
    pred_price = [p.price if p.ok else np.nan for p in parsed]
    out = pd.DataFrame(
        {
            "source_row": frame["source_row"].to_numpy() if "source_row" in frame else frame.index,
            "image": frame["image"].astype(str).to_numpy(),
            "expected": [format_answer(r, template) for r in records],
            "generated": list(generated),
            "true_title": frame["title"].astype(str).to_numpy(),
            "true_category": frame["category3_code"].astype(str).to_numpy(),
            "true_price": frame["full_price"].to_numpy(dtype=float),
            "pred_title": [p.title for p in parsed],
            "pred_category": [p.category for p in parsed],
            "pred_price": np.asarray(pred_price, dtype=float),
            "parse_ok": [p.ok for p in parsed],
            "parse_error": [p.error for p in parsed],
        }
    )
    errors = price_errors(out["true_price"].to_numpy(), out["pred_price"].to_numpy())
    out["abs_error"] = errors["abs_error"].to_numpy()
    out["ape"] = errors["ape"].to_numpy()
    return out.reset_index(drop=True)


@contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar when enabled, a no-op otherwise; yields `advance(n)`."""
    from vistune.progress import make_progress

    with make_progress(enabled) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
