"""report.html: self-contained, with the plots, the product images and the headline numbers."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vistune.answer import DEFAULT_TEMPLATE, format_answer
from vistune.evaluation.baselines import baseline_metrics
from vistune.evaluation.generation import predictions_from_answers
from vistune.evaluation.metrics import compute_metrics, per_category_metrics
from vistune.evaluation.report import worst_and_best, write_report

COLOURS = [
    (200, 30, 30),
    (30, 200, 30),
    (30, 30, 200),
    (200, 200, 30),
    (30, 200, 200),
    (90, 90, 90),
]


@pytest.fixture
def evaluated(tmp_path: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame, dict]:
    (tmp_path / "images").mkdir()
    rows = []
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (40, 30), colour).save(tmp_path / "images" / f"{i}.png")
        rows.append(
            {
                "source_row": i,
                "image": f"images/{i}.png",
                "title": f"Coat <{i}> & co",
                "category3_code": "coats" if i % 2 else "bags",
                "full_price": 100.0 * (i + 1),
            }
        )
    truth = pd.DataFrame(rows)
    generated = [
        format_answer({**r, "full_price": r["full_price"] * (1 + 0.1 * i)})
        for i, r in enumerate(rows)
    ]
    generated[2] = "<script>alert(1)</script>"
    preds = predictions_from_answers(truth, generated, DEFAULT_TEMPLATE)
    blank = predictions_from_answers(
        truth, [format_answer({**r, "full_price": 300.0}) for r in rows], DEFAULT_TEMPLATE
    )
    summary = {
        "run": {
            "model": "tiny",
            "data": str(tmp_path),
            "split": "test",
            "question": "q?",
            "answer_template": DEFAULT_TEMPLATE,
        },
        "metrics": compute_metrics(preds),
        "metrics_parsed_only": compute_metrics(preds, parsed_only=True),
        "per_category": per_category_metrics(preds),
        "baselines": baseline_metrics(truth, truth),
        "ablation": compute_metrics(blank),
    }
    return tmp_path, preds, blank, summary


def test_report_is_self_contained_with_images(evaluated) -> None:
    data_dir, preds, blank, summary = evaluated
    path = write_report(
        data_dir / "out" / "report.html",
        summary=summary,
        predictions=preds,
        ablation=blank,
        load_image=lambda rel: Image.open(data_dir / rel).convert("RGB"),
        n_examples=3,
    )
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and all(r.startswith("data:") for r in refs)
    assert not re.search(r"https?://", page)
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 2  # scatter + histogram
    for png in pngs:
        assert Image.open(io.BytesIO(base64.b64decode(png))).format == "PNG"
    thumbs = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert len(thumbs) == 6  # 3 worst + 3 best, no product twice
    colours = [
        Image.open(io.BytesIO(base64.b64decode(t))).convert("RGB").getpixel((5, 5)) for t in thumbs
    ]
    for colour in COLOURS:  # every product image appears once (JPEG: near colours)
        assert any(sum(abs(a - b) for a, b in zip(colour, c, strict=True)) < 30 for c in colours)
    # generated text is escaped, headline numbers and the unparsed-row rule are shown
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Coat &lt;0&gt; &amp; co" in page
    assert f"{100 * summary['metrics']['parse_rate']:.1f} %" in page
    assert "blank image (ablation)" in page and "category median price" in page
    assert "APE = 100 %" in page
    assert "not a price" in page or "not found" in page  # parse-failure table


def test_worst_puts_unparsed_first_and_best_is_disjoint(evaluated) -> None:
    _, preds, _, _ = evaluated
    worst, best = worst_and_best(preds, 3)
    assert not worst.iloc[0]["parse_ok"]
    assert list(worst["source_row"]) == [2, 5, 4]
    assert list(best["source_row"]) == [0, 1, 3]
    assert set(worst.index).isdisjoint(best.index)
