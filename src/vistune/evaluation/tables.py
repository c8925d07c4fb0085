"""Predictions as a W&B Table: the image next to the expected and generated answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

#: Table columns after the image, taken from a predictions frame.
TABLE_COLUMNS = (
    "source_row",
    "expected",
    "generated",
    "parse_ok",
    "parse_error",
    "true_price",
    "pred_price",
    "ape",
    "true_category",
    "pred_category",
)


def wandb_table(predictions: pd.DataFrame, data_dir: str | Path, limit: int = 100) -> Any:
    """A `wandb.Table` of the first `limit` predictions with their images.

    The first rows are used (not the worst) so that tables logged at successive training
    evaluations show the same products and can be compared step by step. No file output
    beyond what wandb itself stages for the Table's images.
    """
    import wandb

    from vistune.data.dataset import open_image

    rows = predictions.head(limit)
    table = wandb.Table(columns=["image", *TABLE_COLUMNS])
    for record in rows.to_dict("records"):
        image = wandb.Image(open_image(Path(data_dir), str(record["image"])))
        table.add_data(image, *(_plain(record[c]) for c in TABLE_COLUMNS))
    return table


def _plain(value: Any) -> Any:
    """numpy scalars and NaN as plain Python values W&B serialises cleanly."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
