"""Price parsing: formatted strings and numbers become floats; junk raises with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vistune.data import schema
from vistune.data.prices import PriceError, parse_price


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$1,290.00", 1290.0),
        ("1290", 1290.0),
        (1290.0, 1290.0),
        (1290, 1290.0),
        ("1.290,00 €", 1290.0),
        ("USD 1 290", 1290.0),
        ("1,290", 1290.0),
        ("12,5", 12.5),
        ("0.125", 0.125),
        ("1,234,567.89", 1234567.89),
        ("  €49.99 ", 49.99),
        ("0.01", 0.01),
        ("10000000", 1e7),
    ],
)
def test_parses_formatted_prices(value, expected) -> None:
    assert parse_price(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("N/A", schema.NON_NUMERIC_PRICE),
        ("call for price", schema.NON_NUMERIC_PRICE),
        ("1,29,0.5.5", schema.NON_NUMERIC_PRICE),
        (True, schema.NON_NUMERIC_PRICE),
        (float("inf"), schema.NON_NUMERIC_PRICE),
        ("-590.00", schema.NEGATIVE_PRICE),
        (-3, schema.NEGATIVE_PRICE),
        ("", schema.MISSING_PRICE),
        (None, schema.MISSING_PRICE),
        (float("nan"), schema.MISSING_PRICE),
        ("0", schema.PRICE_OUT_OF_RANGE),
        (0.0, schema.PRICE_OUT_OF_RANGE),
        ("-0", schema.PRICE_OUT_OF_RANGE),
        (-0.0, schema.PRICE_OUT_OF_RANGE),
        ("-0.00", schema.PRICE_OUT_OF_RANGE),
        (1e300, schema.PRICE_OUT_OF_RANGE),
        ("1e300", schema.PRICE_OUT_OF_RANGE),
        ("10000000.01", schema.PRICE_OUT_OF_RANGE),
        ("1e400", schema.NON_NUMERIC_PRICE),  # overflows to inf: not finite
    ],
)
def test_rejects_with_reason(value, reason) -> None:
    with pytest.raises(PriceError) as info:
        parse_price(value)
    assert info.value.reason == reason


def test_max_price_is_configurable() -> None:
    assert parse_price("250", max_price=250) == 250.0
    with pytest.raises(PriceError, match="max_price 200") as info:
        parse_price("250", max_price=200)
    assert info.value.reason == schema.PRICE_OUT_OF_RANGE


@given(st.decimals(min_value="0.01", max_value=10**7, places=2, allow_nan=False))
def test_round_trips_usd_formatting(amount) -> None:
    value = float(amount)
    assert parse_price(f"${value:,.2f}") == pytest.approx(value)
    assert parse_price(f"{value:.2f}") == pytest.approx(value)


@given(st.one_of(st.text(max_size=20), st.floats(), st.integers(), st.none()))
def test_any_value_is_a_price_or_a_price_error(value) -> None:
    try:
        price = parse_price(value)
    except PriceError as err:
        assert err.reason in schema.DROP_REASONS
    else:
        assert 0 < price <= 1e7 and price == price


@pytest.mark.parametrize("value", ["12abc34", "Model 12 for 34", "1e5x", "nan", "inf", "--5", "5-"])
def test_text_around_digits_is_not_a_price(value) -> None:
    with pytest.raises(PriceError) as info:
        parse_price(value)
    assert info.value.reason == schema.NON_NUMERIC_PRICE


def test_exponent_and_currency_codes() -> None:
    assert parse_price("1.29e3") == 1290.0
    assert parse_price("1.290 EUR") == 1290.0
    assert parse_price("£ 590") == 590.0
    assert parse_price("CHF 1'290.50") == 1290.5
