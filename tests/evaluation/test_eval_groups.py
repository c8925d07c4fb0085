"""SMAPE, RMSLE and the seen/unseen breakdown, against values computed by hand."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from vistune.evaluation.generation import predictions_from_answers
from vistune.evaluation.groups import group_rows, grouped_metrics, seen_masks
from vistune.evaluation.metrics import compute_metrics, price_metrics

TEMPLATE = "Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}"


def smape_by_hand(actual: list[float], forecast: list[float]) -> float:
    """The Amazon ML Challenge 2025 formula, written out: mean |F-A| / ((|A|+|F|)/2)."""
    total = 0.0
    for a, f in zip(actual, forecast, strict=True):
        total += abs(f - a) / ((abs(a) + abs(f)) / 2) if (a or f) else 0.0
    return total / len(actual)


def test_smape_and_rmsle_match_the_formulas() -> None:
    actual = [100.0, 200.0, 50.0, 400.0]
    forecast = [110.0, 150.0, 75.0, 400.0]
    m = price_metrics(actual, forecast)
    # 10/105 + 50/175 + 25/62.5 + 0, over 4
    assert m["price_smape"] == pytest.approx((10 / 105 + 50 / 175 + 25 / 62.5) / 4)
    assert m["price_smape"] == pytest.approx(smape_by_hand(actual, forecast))
    logs = [(math.log(1 + f) - math.log(1 + a)) ** 2 for a, f in zip(actual, forecast, strict=True)]
    assert m["price_rmsle"] == pytest.approx(math.sqrt(sum(logs) / 4))


def test_a_missing_price_is_the_worst_smape_and_a_zero_forecast_for_rmsle() -> None:
    m = price_metrics([100.0, 300.0], [100.0, None])
    assert m["price_smape"] == pytest.approx((0 + 2.0) / 2)
    assert m["price_rmsle"] == pytest.approx(math.sqrt(math.log(301) ** 2 / 2))
    assert price_metrics([], [])["price_smape"] is None
    assert price_metrics([], [])["price_rmsle"] is None
    # Both zero: no error; a negative forecast is clipped at 0 for the log.
    both = price_metrics([0.0, 10.0], [0.0, -5.0])
    assert both["price_smape"] == pytest.approx((0 + 15 / 7.5) / 2)
    assert both["price_rmsle"] == pytest.approx(math.sqrt(math.log(11) ** 2 / 2))


TRAIN = pd.DataFrame(
    {
        "title": ["Red Coat", "Blue Bag", "Belt", "Belt"],
        "category3_code": ["coats", "bags", "belts", "belts"],
        "full_price": [100.0, 300.0, 40.0, 60.0],
        "material": ["Wool", "Leather", "Leather", "Leather"],
        "pattern": ["Plain"] * 4,
        "size": ["Large", "Medium", "Small", "Small"],
    }
)
TEST = pd.DataFrame(
    {
        "source_row": [0, 1, 2, 3, 4],
        "image": [f"images/{i}.png" for i in range(5)],
        "title": ["Red Coat ", "Green Coat", "Belt", "Tiny Bag", "Blue Bag"],
        "category3_code": ["coats", "coats", "belts", "bags", "bags"],
        "full_price": [120.0, 200.0, 50.0, 100.0, 300.0],
        "material": ["Wool", "Wool", "Leather", "Leather", None],
        "pattern": ["Plain"] * 5,
        "size": ["Large", "Large", "Small", "Small", "Medium"],
    }
)
ANSWERS = [
    "Product: Red Coat, Category: coats, Full Price: 120.00",
    "Product: Green Coat, Category: coats, Full Price: 100.00",
    "Product: Belt, Category: belts, Full Price: 40.00",
    "no answer",
    "Product: Blue Bag, Category: bags, Full Price: 300.00",
]


def test_seen_masks_by_title_and_by_combination() -> None:
    masks = seen_masks(TRAIN, TEST)
    # "Red Coat " is "Red Coat" once stripped; Green Coat and Tiny Bag never occur in train.
    assert masks["title"].tolist() == [True, False, True, False, True]
    # (coats, Wool, Plain, Large) and (belts, Leather, Plain, Small) occur in train;
    # (bags, Leather, Plain, Small) does not; a missing material never matches.
    assert masks["combination"].tolist() == [True, True, True, False, False]
    assert "combination" not in seen_masks(TRAIN.drop(columns=["size"]), TEST)


def test_grouped_metrics_are_the_metrics_of_each_group() -> None:
    predictions = predictions_from_answers(TEST, ANSWERS, TEMPLATE)
    blank = predictions_from_answers(
        TEST, ["Product: Belt, Category: belts, Full Price: 50.00"] * 5, TEMPLATE
    )
    groups = grouped_metrics(TRAIN, TEST, predictions, blank)
    assert list(groups) == ["title", "combination"]
    title = groups["title"]["groups"]
    assert list(title) == ["unseen", "seen"]  # unseen first
    unseen = title["unseen"]
    assert unseen["n"] == 2  # Green Coat (100 for 200) and Tiny Bag (unparsed)
    assert unseen["model"]["parse_rate"] == pytest.approx(0.5)
    assert unseen["model"]["price_mape"] == pytest.approx((0.5 + 1.0) / 2)
    assert unseen["model"]["price_smape"] == pytest.approx(
        smape_by_hand([200.0, 100.0], [100.0, 0.0])
    )
    assert unseen["model"]["title_exact"] == pytest.approx(0.5)
    # Category medians from train: coats 100, bags 300, belts 50.
    by_cat = unseen["baselines"]["category_median_price"]
    assert by_cat["price_mape"] == pytest.approx((100 / 200 + 200 / 100) / 2)
    assert by_cat["price_smape"] == pytest.approx(smape_by_hand([200.0, 100.0], [100.0, 300.0]))
    assert unseen["baselines"]["global_median_price"]["value"] == pytest.approx(80.0)
    assert unseen["ablation"]["price_mape"] == pytest.approx((150 / 200 + 50 / 100) / 2)
    seen = title["seen"]
    assert seen["n"] == 3
    assert seen["model"]["price_mape"] == pytest.approx((0 + 10 / 50 + 0) / 3)
    assert seen["model"]["category_accuracy"] == pytest.approx(1.0)
    combination = groups["combination"]["groups"]
    assert combination["unseen"]["n"] == 2 and combination["seen"]["n"] == 3
    assert combination["seen"]["model"]["price_mape"] == pytest.approx((0 + 0.5 + 0.2) / 3)
    # Groups split the rows: their counts add up to the whole split.
    whole = compute_metrics(predictions)
    assert unseen["n"] + seen["n"] == whole["n"]


def test_empty_group_and_table_rows_put_unseen_first() -> None:
    frame = TEST.iloc[[0, 2]].reset_index(drop=True)
    predictions = predictions_from_answers(frame, [ANSWERS[0], ANSWERS[2]], TEMPLATE)
    groups = grouped_metrics(TRAIN, frame, predictions)
    assert groups["title"]["groups"]["unseen"] == {"n": 0}
    rows = group_rows(
        grouped_metrics(TRAIN, TEST, predictions_from_answers(TEST, ANSWERS, TEMPLATE))
    )
    assert [r[1] for r in rows[:3]] == ["unseen"] * 3  # model, cat. median, global median
    assert [r[3] for r in rows[:3]] == ["model", "category median price", "global median price"]
    assert np.all([r[2] > 0 for r in rows])


def test_report_leads_with_the_unseen_group(tmp_path) -> None:
    from PIL import Image

    from vistune.evaluation.report import render_report

    predictions = predictions_from_answers(TEST, ANSWERS, TEMPLATE)
    summary = {
        "run": {"model": "m", "split": "test"},
        "metrics": compute_metrics(predictions),
        "metrics_parsed_only": compute_metrics(predictions, parsed_only=True),
        "per_category": {},
        "baselines": {},
        "groups": grouped_metrics(TRAIN, TEST, predictions),
    }
    page = render_report(
        summary=summary,
        predictions=predictions,
        load_image=lambda _: Image.new("RGB", (8, 8)),
        n_examples=1,
    )
    section = page.index("Unseen vs seen in training")
    assert section < page.index("Headline metrics")
    rows = re.findall(r"<tr><td>(title|attribute combination)</td><td>(\w+)</td>", page)
    assert rows[0] == ("title", "unseen") and rows[-1] == ("attribute combination", "seen")
    assert "SMAPE" in page[section:] and "RMSLE" in page[section:]
    # Model on unseen titles: MAPE (0.5 + 1.0) / 2 = 75.0 %, shown in the first row.
    first_row = page[section:].split("</tr>")[1]
    assert "75.0 %" in first_row
