"""Robust price parsing: catalog prices arrive as floats, ints and formatted strings.

"$1,290.00", "1290", 1290.0, "1.290,00 €", "USD 1 290" all mean 1290.0. Anything that is not
a number ("N/A", "call for price", "") raises `PriceError` with the reason `prepare` reports,
so a bad price is a counted, listed drop and never a silent 0.
"""

from __future__ import annotations

import math
import re
import unicodedata
from numbers import Real
from typing import Any

from vistune.data import schema

_PLAIN_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_CURRENCY_CODE = re.compile(r"^[A-Za-z]{3}\b\.?|\b[A-Za-z]{3}\.?$")  # "USD 1,290", "1.290 EUR"
_NUMBER_LIKE = re.compile(r"^[+\-]?\d[\d.,]*$|^[+\-]?[.,]\d[\d.,]*$")


class PriceError(ValueError):
    """A value that is not a usable price; `reason` is one of the schema drop reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


#: Default upper bound for a catalog price: above it is a data error (1e300, a SKU in the
#: price column), not a product. `prepare` takes it from `max_price`.
DEFAULT_MAX_PRICE = 10_000_000.0


def parse_price(value: Any, *, max_price: float = DEFAULT_MAX_PRICE) -> float:
    """Return the price as a positive, finite float up to `max_price`, or raise `PriceError`.

    0 and -0 are refused (a free product is missing data, and "-0.00" is no price a model
    should learn), and so is anything over `max_price`, with `price_out_of_range`.

    Separator rules for strings: when both "," and "." occur, the last one is the decimal
    separator ("1,290.00" and "1.290,00"); a lone separator followed by exactly three digits
    groups thousands ("1,290" and "1.290"), otherwise it is the decimal point ("12,5").
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise PriceError(schema.MISSING_PRICE, "price is empty")
    if isinstance(value, bool):
        raise PriceError(schema.NON_NUMERIC_PRICE, f"price {value!r} is a boolean, not a number")
    if isinstance(value, Real):
        number = float(value)
    elif isinstance(value, str):
        number = _parse_price_text(value)
    else:
        raise PriceError(schema.NON_NUMERIC_PRICE, f"price {value!r} is not a number")
    if not math.isfinite(number):
        raise PriceError(schema.NON_NUMERIC_PRICE, f"price {value!r} is not finite")
    if number < 0:
        raise PriceError(schema.NEGATIVE_PRICE, f"price {value!r} is negative")
    if number == 0:
        raise PriceError(schema.PRICE_OUT_OF_RANGE, f"price {value!r} is zero, not a price")
    if number > max_price:
        raise PriceError(
            schema.PRICE_OUT_OF_RANGE,
            f"price {value!r} is above max_price {max_price:g} (raise max_price if genuine)",
        )
    return number


def _parse_price_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise PriceError(schema.MISSING_PRICE, "price is an empty string")
    if _PLAIN_FLOAT.match(stripped):  # "1290", "1290.5", "1.29e3"
        return float(stripped)
    # Drop currency signs and codes and grouping spaces; what is left must be a number.
    cleaned = "".join(ch for ch in stripped if unicodedata.category(ch) != "Sc")
    cleaned = _CURRENCY_CODE.sub("", cleaned).replace("\u2212", "-")
    cleaned = re.sub(r"[\s'\u00a0\u202f]", "", cleaned)
    if not _NUMBER_LIKE.match(cleaned):
        raise PriceError(schema.NON_NUMERIC_PRICE, f"price {text!r} is not a number")
    sign = -1.0 if cleaned.startswith("-") else 1.0
    cleaned = cleaned.lstrip("+-")
    if "," in cleaned and "." in cleaned:
        decimal = "," if cleaned.rfind(",") > cleaned.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        cleaned = cleaned.replace(thousands, "").replace(decimal, ".")
    elif "," in cleaned or "." in cleaned:
        sep = "," if "," in cleaned else "."
        parts = cleaned.split(sep)
        groups_thousands = len(parts) == 2 and len(parts[1]) == 3 and parts[0] not in ("", "0")
        if len(parts) > 2 or groups_thousands:
            if not all(len(p) == 3 for p in parts[1:]):
                raise PriceError(schema.NON_NUMERIC_PRICE, f"price {text!r} is not a number")
            cleaned = "".join(parts)
        else:
            cleaned = cleaned.replace(sep, ".")
    try:
        return sign * float(cleaned)
    except ValueError as exc:
        raise PriceError(schema.NON_NUMERIC_PRICE, f"price {text!r} is not a number") from exc
