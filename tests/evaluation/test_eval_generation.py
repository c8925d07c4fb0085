"""Generation for evaluation on a tiny Phi-3-vision model: batching, determinism, ablation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, format_answer
from vistune.evaluation.generation import BLANK_GREY, PREDICTION_COLUMNS, generate_predictions

MAX_NEW = 10


@pytest.fixture(scope="module")
def vlm(tiny_phi3v_dir: Path):
    from vistune.models.families import load_vlm

    model = load_vlm(str(tiny_phi3v_dir))
    model.model.eval()
    return model


@pytest.fixture(scope="module")
def frame(prepared_dir: Path) -> pd.DataFrame:
    from vistune.data.dataset import load_split

    return load_split(prepared_dir, "test").head(6)


class Recorder:
    """Wraps a model and records what `generate` was asked."""

    def __init__(self, vlm) -> None:
        self.vlm, self.calls = vlm, []

    def generate(self, images, questions, max_new_tokens=64):
        self.calls.append((list(images), list(questions), max_new_tokens))
        return self.vlm.generate(images, questions, max_new_tokens=max_new_tokens)


def run(vlm, frame, data_dir, **kwargs) -> pd.DataFrame:
    return generate_predictions(
        vlm,
        frame,
        data_dir,
        question=DEFAULT_QUESTION,
        template=DEFAULT_TEMPLATE,
        max_new_tokens=MAX_NEW,
        **kwargs,
    )


def test_batched_equals_one_by_one(vlm, frame, prepared_dir) -> None:
    recorder = Recorder(vlm)
    batched = run(recorder, frame, prepared_dir, batch_size=4)
    assert [len(c[0]) for c in recorder.calls] == [4, 2]
    assert all(c[2] == MAX_NEW for c in recorder.calls)
    single = run(vlm, frame, prepared_dir, batch_size=1)
    assert batched["generated"].tolist() == single["generated"].tolist()
    assert any(text for text in batched["generated"])  # the tiny model does say something
    again = run(vlm, frame, prepared_dir, batch_size=4)
    pd.testing.assert_frame_equal(batched, again)  # deterministic (greedy)


def test_rows_line_up_with_the_split(vlm, frame, prepared_dir) -> None:
    preds = run(vlm, frame, prepared_dir, batch_size=3)
    assert tuple(preds.columns) == PREDICTION_COLUMNS
    assert preds["source_row"].tolist() == frame["source_row"].tolist()
    assert preds["image"].tolist() == frame["image"].tolist()
    assert preds["expected"].tolist() == [format_answer(r) for r in frame.to_dict("records")]
    assert preds["true_price"].tolist() == frame["full_price"].tolist()
    unparsed = preds[~preds["parse_ok"]]
    assert unparsed["pred_price"].isna().all() and unparsed["parse_error"].notna().all()


def test_ablation_sends_grey_images_of_the_same_size(vlm, frame, prepared_dir) -> None:
    from vistune.data.dataset import open_image

    real, blank = Recorder(vlm), Recorder(vlm)
    run(real, frame, prepared_dir, batch_size=6)
    preds = run(blank, frame, prepared_dir, batch_size=6, blank_image=True)
    assert len(preds) == len(frame)
    real_images, real_questions, _ = real.calls[0]
    blank_images, blank_questions, _ = blank.calls[0]
    assert blank_questions == real_questions == [DEFAULT_QUESTION] * 6
    for original, grey, rel in zip(real_images, blank_images, frame["image"], strict=True):
        assert grey.size == original.size == open_image(prepared_dir, rel).size
        assert grey.mode == "RGB"
        assert grey.getextrema() == tuple((v, v) for v in BLANK_GREY)
        assert original.getextrema() != grey.getextrema()
