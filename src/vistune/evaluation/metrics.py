"""Scores for generated answers: parse rate, price errors, title and category agreement.

Every metric is computed over the whole split, with rows whose answer did not parse counted
as misses, and can be computed again over parsed rows only (`parsed_only=True`). Precisely:

- `parse_rate`: share of rows whose answer matched the template (`ParsedAnswer.ok`).
- price, over the whole split: an unparsed row has no price, so it is scored as a complete
  miss: absolute error = the true price and APE (absolute percentage error) = 1.0 (100 %),
  and it is never within 10 % or 25 %. A parsed price can be off by more than 100 %, so the
  parse rate and the parsed-only numbers are reported beside these, never instead of them.
  `price_mae` is in the catalog's currency; `price_mape` is the mean APE, `price_median_ape`
  its median, `price_within_10pct`/`price_within_25pct` the share with APE <= 0.10 / 0.25.
  Rows whose true price is not positive have no APE and are left out of the APE-based
  metrics (`n_price_undefined` counts them; `prepare` drops such rows, so it is normally 0).
- `price_smape`: symmetric MAPE as the Amazon ML Challenge 2025 ("Smart Product Pricing")
  scores it, mean of |F - A| / ((|A| + |F|) / 2), as a fraction (x 100 gives the challenge's
  percent; its winner scored about 40 %). It lies in 0..2; a row with A = F = 0 scores 0.
  An unparsed row is scored as the prediction 0, like MAE and APE above: SMAPE 2 (200 %).
- `price_rmsle`: root mean squared log error, sqrt(mean((log(1 + F) - log(1 + A))^2)), with
  F clipped at 0 (log(1 + F) needs F > -1); an unparsed row counts as F = 0.
- `title_exact`: share of rows whose title equals the true title (surrounding whitespace
  ignored, case kept); `title_similarity`: mean `rapidfuzz.fuzz.ratio / 100` (0..1).
  Unparsed rows score 0 on both.
- `category_accuracy`: share of rows whose category equals the true one (unparsed: wrong).
  `category_macro_f1`: F1 per category present in the true labels, averaged unweighted. A
  predicted category that is not a true label of the split is not a class of its own: it is
  a false negative for the row's true class, as is an unparsed row.
- `n`: rows scored; `n_parsed`: rows that parsed.

A metric that has no rows to average over (e.g. parsed-only metrics when nothing parsed) is
None, never 0, so "no data" does not read as "perfectly wrong".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz
from rapidfuzz.process import cpdist

#: Columns `compute_metrics` reads (written by `generate_predictions`).
REQUIRED_COLUMNS = (
    "true_title",
    "true_category",
    "true_price",
    "pred_title",
    "pred_category",
    "pred_price",
    "parse_ok",
)

PRICE_KEYS = (
    "price_mae",
    "price_mape",
    "price_median_ape",
    "price_within_10pct",
    "price_within_25pct",
    "price_smape",
    "price_rmsle",
)
TITLE_KEYS = ("title_exact", "title_similarity")
CATEGORY_KEYS = ("category_accuracy", "category_macro_f1")
METRIC_KEYS = ("parse_rate", *PRICE_KEYS, *TITLE_KEYS, *CATEGORY_KEYS, "n")


def price_errors(true_price: Sequence[float], pred_price: Sequence[float | None]) -> pd.DataFrame:
    """Per-row `abs_error` and `ape`; a missing prediction is a full miss (error = true price)."""
    true = np.asarray(true_price, dtype=float)
    pred = np.asarray([np.nan if p is None else p for p in pred_price], dtype=float)
    missing = np.isnan(pred)
    abs_error = np.where(missing, np.abs(true), np.abs(pred - true))
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.where(true > 0, abs_error / np.where(true > 0, true, 1.0), np.nan)
    return pd.DataFrame({"abs_error": abs_error, "ape": ape})


def price_smape_terms(
    true_price: Sequence[float], pred_price: Sequence[float | None]
) -> np.ndarray:
    """Per-row |F - A| / ((|A| + |F|) / 2); a missing prediction counts as F = 0 (term 2)."""
    true = np.asarray(true_price, dtype=float)
    pred = np.nan_to_num(np.asarray([np.nan if p is None else p for p in pred_price], float))
    scale = (np.abs(true) + np.abs(pred)) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, np.abs(pred - true) / np.where(scale > 0, scale, 1.0), 0.0)


def price_rmsle(true_price: Sequence[float], pred_price: Sequence[float | None]) -> float | None:
    """sqrt(mean((log1p(max(F, 0)) - log1p(A))^2)); a missing prediction counts as F = 0."""
    true = np.clip(np.asarray(true_price, dtype=float), 0, None)
    pred = np.nan_to_num(np.asarray([np.nan if p is None else p for p in pred_price], float))
    if not true.size:
        return None
    return float(np.sqrt(np.mean((np.log1p(np.clip(pred, 0, None)) - np.log1p(true)) ** 2)))


def price_metrics(
    true_price: Sequence[float], pred_price: Sequence[float | None]
) -> dict[str, float | int | None]:
    """MAE, MAPE, median APE, within-10/25 % shares, SMAPE, RMSLE (see the module docstring)."""
    errors = price_errors(true_price, pred_price)
    ape = errors["ape"].dropna().to_numpy()
    out: dict[str, float | int | None] = {
        "price_mae": _mean(errors["abs_error"].to_numpy()),
        "price_mape": _mean(ape),
        "price_median_ape": float(np.median(ape)) if len(ape) else None,
        "price_within_10pct": _mean(ape <= 0.10) if len(ape) else None,
        "price_within_25pct": _mean(ape <= 0.25) if len(ape) else None,
        "price_smape": _mean(price_smape_terms(true_price, pred_price)),
        "price_rmsle": price_rmsle(true_price, pred_price),
        "n_price_undefined": int(errors["ape"].isna().sum()),
    }
    return out


def title_metrics(
    true_title: Sequence[str], pred_title: Sequence[str | None]
) -> dict[str, float | None]:
    """Exact match (whitespace-stripped) and mean rapidfuzz ratio in 0..1; missing scores 0."""
    true = [str(t).strip() for t in true_title]
    pred = [None if _missing(p) else str(p).strip() for p in pred_title]
    if not true:
        return {"title_exact": None, "title_similarity": None}
    exact = [p is not None and p == t for p, t in zip(pred, true, strict=True)]
    sims = cpdist(true, [p if p is not None else "" for p in pred], scorer=fuzz.ratio)
    sims = np.where([p is None for p in pred], 0.0, np.asarray(sims, dtype=float) / 100.0)
    return {"title_exact": _mean(exact), "title_similarity": _mean(sims)}


def category_metrics(
    true_category: Sequence[str],
    pred_category: Sequence[str | None],
    labels: Iterable[str] | None = None,
) -> dict[str, float | None]:
    """Accuracy and macro-F1 over `labels` (default: the categories in `true_category`)."""
    true = [str(t) for t in true_category]
    pred = [None if _missing(p) else str(p).strip() for p in pred_category]
    if not true:
        return {"category_accuracy": None, "category_macro_f1": None}
    correct = [p == t for p, t in zip(pred, true, strict=True)]
    scores = [
        f1
        for label in sorted(set(true) if labels is None else set(labels))
        if (f1 := _f1(true, pred, label)) is not None
    ]
    return {
        "category_accuracy": _mean(correct),
        "category_macro_f1": float(np.mean(scores)) if scores else None,
    }


def compute_metrics(predictions: pd.DataFrame, *, parsed_only: bool = False) -> dict[str, Any]:
    """All headline metrics for a predictions frame (see the module docstring for definitions).

    Cheap and side-effect free: training calls it on a validation subset at every evaluation.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions frame lacks columns {missing}; use generate_predictions")
    frame = predictions
    n_total = len(frame)
    parsed_mask = frame["parse_ok"].astype(bool).to_numpy()
    if parsed_only:
        frame = frame[parsed_mask]
    n_parsed = int(parsed_mask.sum())
    ok = frame["parse_ok"].astype(bool).to_numpy()
    pred_price = [p if k else None for p, k in zip(frame["pred_price"], ok, strict=True)]
    pred_title = [p if k else None for p, k in zip(frame["pred_title"], ok, strict=True)]
    pred_cat = [p if k else None for p, k in zip(frame["pred_category"], ok, strict=True)]
    metrics: dict[str, Any] = {"parse_rate": (n_parsed / n_total) if n_total else None}
    metrics.update(price_metrics(frame["true_price"].to_numpy(dtype=float), pred_price))
    metrics.update(title_metrics(list(frame["true_title"]), pred_title))
    metrics.update(category_metrics(list(frame["true_category"]), pred_cat))
    metrics["n"] = len(frame)
    metrics["n_parsed"] = n_parsed
    return metrics


def per_category_metrics(predictions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """`compute_metrics` within each true category (category_accuracy there is its recall).

    Macro-F1 is left out: within one true class it is not meaningful.
    """
    out: dict[str, dict[str, Any]] = {}
    for category, group in predictions.groupby("true_category", sort=True):
        scores = compute_metrics(group)
        scores.pop("category_macro_f1")
        out[str(category)] = scores
    return out


def _f1(true: list[str], pred: list[str | None], label: str) -> float | None:
    tp = sum(1 for t, p in zip(true, pred, strict=True) if t == label and p == label)
    fp = sum(1 for t, p in zip(true, pred, strict=True) if t != label and p == label)
    fn = sum(1 for t, p in zip(true, pred, strict=True) if t == label and p != label)
    if tp + fp + fn == 0:
        return None
    return 2 * tp / (2 * tp + fp + fn)


def _mean(values: Any) -> float | None:
    array = np.asarray(values, dtype=float)
    return float(array.mean()) if array.size else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
