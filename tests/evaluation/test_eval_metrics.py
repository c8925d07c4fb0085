"""Metrics and baselines against values computed by hand on small fixed tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vistune.evaluation.baselines import baseline_metrics, fit_baselines
from vistune.evaluation.generation import predictions_from_answers
from vistune.evaluation.metrics import compute_metrics, per_category_metrics

TRUTH = pd.DataFrame(
    {
        "source_row": [10, 11, 12, 13, 14],
        "image": [f"images/{i}.png" for i in range(5)],
        "title": ["Red Coat", "Blue Bag", "Belt", "Check Scarf", "Wool Scarf"],
        "category3_code": ["coats", "bags", "belts", "scarves", "scarves"],
        "full_price": [100.0, 200.0, 50.0, 400.0, 80.0],
    }
)
GENERATED = [
    "Product: Red Coat, Category: coats, Full Price: 110.00",
    "Product: Blue Bags, Category: coats, Full Price: $150",
    "Product: Belt, Category: belts",  # no price label: unparsed
    "Product: Check Scarf, Category: scarves, Full Price: 400.00",
    "Product: Scarf, Category: bags, Full Price: 100.00",
]
# rapidfuzz ratio = 2 * LCS / (len(a) + len(b)) for these pairs
SIM_BAG = 2 * 8 / (8 + 9)  # "Blue Bag" vs "Blue Bags"
SIM_SCARF = 2 * 5 / (10 + 5)  # "Wool Scarf" vs "Scarf"


@pytest.fixture
def predictions() -> pd.DataFrame:
    return predictions_from_answers(
        TRUTH,
        GENERATED,
        "Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}",
    )


def test_predictions_frame_lines_up_truth_and_parse(predictions: pd.DataFrame) -> None:
    assert predictions["source_row"].tolist() == [10, 11, 12, 13, 14]
    assert predictions["expected"][0] == "Product: Red Coat, Category: coats, Full Price: 100.00"
    assert predictions["parse_ok"].tolist() == [True, True, False, True, True]
    assert "Full Price" in predictions["parse_error"][2]
    assert math.isnan(predictions["pred_price"][2])  # never 0 on failure
    assert predictions["pred_price"][1] == 150.0
    assert predictions["ape"].tolist() == pytest.approx([0.1, 0.25, 1.0, 0.0, 0.25])


def test_whole_split_counts_unparsed_as_misses(predictions: pd.DataFrame) -> None:
    m = compute_metrics(predictions)
    assert m["n"] == 5 and m["n_parsed"] == 4
    assert m["parse_rate"] == pytest.approx(0.8)
    assert m["price_mae"] == pytest.approx((10 + 50 + 50 + 0 + 20) / 5)
    assert m["price_mape"] == pytest.approx((0.1 + 0.25 + 1.0 + 0.0 + 0.25) / 5)
    assert m["price_median_ape"] == pytest.approx(0.25)
    assert m["price_within_10pct"] == pytest.approx(2 / 5)
    assert m["price_within_25pct"] == pytest.approx(4 / 5)
    assert m["title_exact"] == pytest.approx(2 / 5)
    assert m["title_similarity"] == pytest.approx((1 + SIM_BAG + 0 + 1 + SIM_SCARF) / 5)
    assert m["category_accuracy"] == pytest.approx(2 / 5)
    # F1: coats 2/3 (tp 1, fp 1), bags 0, belts 0 (unparsed = fn), scarves 2/3 (tp 1, fn 1)
    assert m["category_macro_f1"] == pytest.approx((2 / 3 + 0 + 0 + 2 / 3) / 4)


def test_parsed_only(predictions: pd.DataFrame) -> None:
    m = compute_metrics(predictions, parsed_only=True)
    assert m["n"] == 4 and m["n_parsed"] == 4 and m["parse_rate"] == pytest.approx(0.8)
    assert m["price_mae"] == pytest.approx(20.0)
    assert m["price_mape"] == pytest.approx(0.15)
    assert m["price_median_ape"] == pytest.approx(0.175)
    assert m["price_within_10pct"] == pytest.approx(0.5)
    assert m["price_within_25pct"] == pytest.approx(1.0)
    assert m["title_exact"] == pytest.approx(0.5)
    assert m["title_similarity"] == pytest.approx((2 + SIM_BAG + SIM_SCARF) / 4)
    assert m["category_accuracy"] == pytest.approx(0.5)
    assert m["category_macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_per_category(predictions: pd.DataFrame) -> None:
    per = per_category_metrics(predictions)
    assert sorted(per) == ["bags", "belts", "coats", "scarves"]
    scarves = per["scarves"]
    assert scarves["n"] == 2 and scarves["parse_rate"] == 1.0
    assert scarves["price_mae"] == pytest.approx(10.0)
    assert scarves["price_mape"] == pytest.approx(0.125)
    assert scarves["category_accuracy"] == pytest.approx(0.5)
    assert "category_macro_f1" not in scarves
    assert per["belts"]["parse_rate"] == 0.0 and per["belts"]["price_mape"] == pytest.approx(1.0)


def test_nothing_parsed_gives_none_not_zero() -> None:
    preds = predictions_from_answers(
        TRUTH.iloc[:2],
        ["garbage", ""],
        "Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}",
    )
    m = compute_metrics(preds, parsed_only=True)
    assert m["n"] == 0 and m["price_mape"] is None and m["category_accuracy"] is None
    whole = compute_metrics(preds)
    assert whole["parse_rate"] == 0.0 and whole["price_mape"] == pytest.approx(1.0)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="pred_price"):
        compute_metrics(pd.DataFrame({"true_title": []}))


TRAIN = pd.DataFrame(
    {
        "category3_code": ["coats", "coats", "bags", "bags", "bags"],
        "full_price": [100.0, 300.0, 50.0, 70.0, 90.0],
    }
)
SPLIT = pd.DataFrame(
    {"category3_code": ["coats", "bags", "belts"], "full_price": [200.0, 70.0, 45.0]}
)


def test_baselines_fit_on_train() -> None:
    fitted = fit_baselines(TRAIN)
    assert fitted["global_median_price"] == 90.0
    assert fitted["category_median_price"] == {"coats": 200.0, "bags": 70.0}
    assert fitted["most_frequent_category"] == "bags"
    tie = pd.DataFrame({"category3_code": ["zips", "aprons"], "full_price": [1.0, 2.0]})
    assert fit_baselines(tie)["most_frequent_category"] == "aprons"


def test_baseline_scores() -> None:
    b = baseline_metrics(TRAIN, SPLIT)
    g = b["global_median_price"]
    assert g["value"] == 90.0
    assert g["price_mae"] == pytest.approx((110 + 20 + 45) / 3)
    assert g["price_mape"] == pytest.approx((110 / 200 + 20 / 70 + 45 / 45) / 3)
    assert g["price_median_ape"] == pytest.approx(0.55)
    assert g["price_within_10pct"] == 0.0 and g["price_within_25pct"] == 0.0
    c = b["category_median_price"]
    assert c["n_fallback"] == 1  # belts is not in train: global median 90
    assert c["price_mae"] == pytest.approx(45 / 3)
    assert c["price_mape"] == pytest.approx(1 / 3)
    assert c["price_median_ape"] == pytest.approx(0.0)
    assert c["price_within_10pct"] == pytest.approx(2 / 3)
    f = b["most_frequent_category"]
    assert f["value"] == "bags"
    assert f["category_accuracy"] == pytest.approx(1 / 3)
    assert f["category_macro_f1"] == pytest.approx((0 + 0.5 + 0) / 3)
