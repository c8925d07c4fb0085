"""The answer format the model is trained to produce, and its strict parser.

Default target (the reference format, kept so results compare with it):
`Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}`.
Titles may contain commas and label-like words, so parsing works from the right on the
fixed labels. A failed parse is a failure with a reason, never a price of 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_QUESTION = "What is shown in this image?"
DEFAULT_TEMPLATE = "Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}"


def format_answer(row: Mapping[str, Any], template: str = DEFAULT_TEMPLATE) -> str:
    """Render the training target for one catalog row."""
    return template.format(**row)
