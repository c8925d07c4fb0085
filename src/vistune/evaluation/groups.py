"""Seen vs unseen: every metric on the test rows a model could have memorised and the rest.

A test product whose title also occurs in the training split can be answered by recall;
one whose title never occurs there must be read from the picture. Scoring the two apart is
what tells memorising from generalising. Two breakdowns:

- `title`: the test row's title (whitespace-stripped) occurs among the train split's titles
  or not;
- `combination`: on catalogs that have the attribute columns (`vistune sample` writes them;
  `schema.COMBINATION_COLUMNS`: category, material, pattern, size), the row's attribute
  combination occurs in the train split or not. A missing attribute never matches.

Each group gets the model's metrics, the blank-image ablation's and every baseline's
(fitted on the whole train split, scored on the group's rows), computed by the same
functions as the whole-split numbers. The unseen group comes first: it is the one that
says what the model learned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vistune.data import schema
from vistune.evaluation.baselines import baseline_metrics
from vistune.evaluation.metrics import compute_metrics

#: Group names in the order metrics.json and the report show them.
GROUPS = ("unseen", "seen")


def seen_masks(train: pd.DataFrame, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """{breakdown: True where the row of `frame` was seen in `train`}; `combination` only
    when both frames have every combination column."""
    masks = {"title": _isin(_titles(frame), set(_titles(train)))}
    columns = list(schema.COMBINATION_COLUMNS)
    if all(c in frame.columns and c in train.columns for c in columns):
        seen = {c for c in _combos(train, columns) if None not in c}
        masks["combination"] = np.array(
            [None not in c and c in seen for c in _combos(frame, columns)], dtype=bool
        )
    return masks


def grouped_metrics(
    train: pd.DataFrame,
    frame: pd.DataFrame,
    predictions: pd.DataFrame,
    ablation: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """metrics.json's `groups`: per breakdown, its definition and per group (unseen first)
    the row count, the model's metrics, the ablation's and the baselines'.

    `predictions` (and `ablation`) hold one row per row of `frame`, in the same order.
    """
    if len(predictions) != len(frame):
        raise ValueError("predictions must have one row per evaluated row")
    out: dict[str, Any] = {}
    for breakdown, seen in seen_masks(train, frame).items():
        groups: dict[str, Any] = {}
        for name in GROUPS:
            mask = seen if name == "seen" else ~seen
            rows = int(mask.sum())
            if rows == 0:
                groups[name] = {"n": 0}
                continue
            groups[name] = {
                "n": rows,
                "model": compute_metrics(predictions[mask]),
                "ablation": compute_metrics(ablation[mask]) if ablation is not None else None,
                "baselines": baseline_metrics(train, frame[mask]),
            }
        out[breakdown] = {
            "columns": ["title"] if breakdown == "title" else list(schema.COMBINATION_COLUMNS),
            "groups": groups,
        }
    return out


def _titles(frame: pd.DataFrame) -> list[str]:
    return [str(t).strip() for t in frame[schema.TITLE]]


def _isin(values: list[str], pool: set[str]) -> np.ndarray:
    return np.array([v in pool for v in values], dtype=bool)


def _combos(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    values = []
    for row in frame[columns].itertuples(index=False, name=None):
        values.append(tuple(None if pd.isna(v) or str(v).strip() == "" else str(v) for v in row))
    return values


#: (label, where the numbers are in a group) in display order: the model, its ablation,
#: then the two price baselines.
PREDICTORS = (
    ("model", ("model",)),
    ("blank image", ("ablation",)),
    ("category median price", ("baselines", "category_median_price")),
    ("global median price", ("baselines", "global_median_price")),
)
BREAKDOWN_TITLES = {"title": "title", "combination": "attribute combination"}


def group_rows(groups: dict[str, Any]) -> list[tuple[str, str, int, str, dict[str, Any]]]:
    """(breakdown title, group, n, predictor, metrics) rows for tables, unseen first."""
    rows = []
    for breakdown, entry in groups.items():
        for name in GROUPS:
            group = entry["groups"].get(name, {"n": 0})
            for label, path in PREDICTORS:
                values: Any = group
                for key in path:
                    values = values.get(key) if isinstance(values, dict) else None
                if group["n"] and values:
                    title = BREAKDOWN_TITLES.get(breakdown, breakdown)
                    rows.append((title, name, group["n"], label, values))
    return rows
