"""Guesses a model must beat, fitted on the train split and scored on the evaluated split.

- `global_median_price`: every product gets the median full price of the train split.
- `category_median_price`: every product gets the train median of its *true* category (an
  oracle on the category, so it is a strong price baseline); a category absent from train
  falls back to the global train median, and `n_fallback` says how often that happened.
- `most_frequent_category`: every product gets the most frequent train category (ties broken
  by name so the result is deterministic).

Each baseline is scored with the same functions as the model (`vistune.evaluation.metrics`),
only on the metrics it predicts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from vistune.errors import DataError
from vistune.evaluation.metrics import category_metrics, price_metrics


def fit_baselines(train: pd.DataFrame) -> dict[str, Any]:
    """The statistics each baseline predicts with, from the train split."""
    if train.empty:
        raise DataError("train split is empty: baselines need train rows to fit medians")
    counts = train["category3_code"].astype(str).value_counts()
    top = counts.max()
    return {
        "global_median_price": float(train["full_price"].median()),
        "category_median_price": {
            str(k): float(v)
            for k, v in train.groupby("category3_code")["full_price"].median().items()
        },
        "most_frequent_category": sorted(str(c) for c, n in counts.items() if n == top)[0],
    }


def baseline_metrics(train: pd.DataFrame, frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Score every baseline on `frame` (the evaluated split), fitted on `train`."""
    fitted = fit_baselines(train)
    true_price = frame["full_price"].to_numpy(dtype=float)
    true_category = frame["category3_code"].astype(str).tolist()
    global_median = fitted["global_median_price"]
    by_category = fitted["category_median_price"]
    category_guess = [by_category.get(c, global_median) for c in true_category]
    n_fallback = sum(1 for c in true_category if c not in by_category)
    return {
        "global_median_price": {
            **price_metrics(true_price, [global_median] * len(frame)),
            "value": global_median,
        },
        "category_median_price": {
            **price_metrics(true_price, category_guess),
            "n_fallback": n_fallback,
        },
        "most_frequent_category": {
            **category_metrics(true_category, [fitted["most_frequent_category"]] * len(frame)),
            "value": fitted["most_frequent_category"],
        },
    }
