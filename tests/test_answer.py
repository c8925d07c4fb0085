"""The answer parser: tricky titles, tolerant prices, clear failures, template round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistune.answer import DEFAULT_TEMPLATE, format_answer, parse_answer, parse_price
from vistune.errors import ConfigError


def row(title: str, category: str = "handbags", price: float = 1290.0) -> dict:
    return {"title": title, "category3_code": category, "full_price": price}


@pytest.mark.parametrize(
    "title",
    [
        "Check Cotton Shirt",
        "Leather Belt, Reversible, 35mm",
        "Bag, Category: Small, Full Price: 10.00",
        "Scarf Category: wool",
        "Product: Trench Coat",
        "  Padded Jacket",
        "Étui en cuir – «petit»",
        "Heritage, Full Price: Trench, Category: Coat",
    ],
)
def test_tricky_titles_round_trip(title: str) -> None:
    parsed = parse_answer(format_answer(row(title.strip())))
    assert parsed.ok, parsed.error
    assert parsed.title == title.strip()
    assert parsed.category == "handbags"
    assert parsed.price == 1290.0


def test_fields_read_from_the_right_on_the_fixed_labels() -> None:
    text = "Product: Trench, Category: Coat, Category: outerwear, Full Price: 2,190.00"
    parsed = parse_answer(text)
    assert (parsed.title, parsed.category, parsed.price) == (
        "Trench, Category: Coat",
        "outerwear",
        2190.0,
    )
    assert parsed.fields == {
        "title": "Trench, Category: Coat",
        "category3_code": "outerwear",
        "full_price": "2,190.00",
    }


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1290", 1290.0),
        ("1290.00", 1290.0),
        ("$1,290.00", 1290.0),
        ("$ 1290.5", 1290.5),
        ("1,234,567.89", 1234567.89),
        ("0.99", 0.99),
        ("USD 450", 450.0),
        ("450 USD", 450.0),
    ],
)
def test_price_tolerant_forms(raw: str, value: float) -> None:
    assert parse_price(raw) == pytest.approx(value)
    parsed = parse_answer(f"Product: Coat, Category: coats, Full Price: {raw}")
    assert parsed.ok and parsed.price == pytest.approx(value)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "-10.00",
        "12,34.00",
        "1,2345",
        "1.2.3",
        "nan",
        "inf",
        "1e5",
        "12 34",
        "$",
        "10.00 and more",
    ],
)
def test_bad_prices_fail_without_a_zero(raw: str) -> None:
    assert parse_price(raw) is None
    parsed = parse_answer(f"Product: Coat, Category: coats, Full Price: {raw}")
    assert not parsed.ok
    assert parsed.price is None and parsed.title is None and parsed.category is None
    assert parsed.error


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ("   \n", "empty answer"),
        ("Coat 1290", "Full Price"),
        ("Product: Coat, Full Price: 12.00", "Category"),
        ("Category: coats, Full Price: 12.00", "Category"),
        ("Item: Coat, Category: coats, Full Price: 12.00", "start with 'Product:'"),
        ("Product: , Category: coats, Full Price: 12.00", "empty title"),
        ("Product: Coat, Category: , Full Price: 12.00", "empty category3_code"),
        ("Product: Coat, Category: coats, Full Price: 12.00 Product: Coat", "not a price"),
    ],
)
def test_failures_name_the_reason(text: str, reason: str) -> None:
    parsed = parse_answer(text)
    assert not parsed.ok
    assert reason in parsed.error
    assert parsed.price is None


def test_surrounding_whitespace_is_ignored() -> None:
    parsed = parse_answer("\n Product: Coat, Category: coats, Full Price: 12.00 \n")
    assert parsed.ok and parsed.title == "Coat" and parsed.price == 12.0


def test_custom_template_is_parsed_from_its_own_labels() -> None:
    template = "{title} | {category3_code} | ${full_price:,.2f}."
    text = format_answer(row("Belt | Leather", "belts", 12345.5), template)
    assert text == "Belt | Leather | belts | $12,345.50."
    parsed = parse_answer(text, template)
    assert (parsed.title, parsed.category, parsed.price) == ("Belt | Leather", "belts", 12345.5)
    assert not parse_answer("Belt | belts | 12.00", template).ok  # no trailing "."


def test_template_without_price_has_no_price() -> None:
    parsed = parse_answer("Name: Coat; Type: coats", "Name: {title}; Type: {category3_code}")
    assert parsed.ok and parsed.price is None and parsed.category == "coats"


@pytest.mark.parametrize(
    "template",
    [
        "{title}{category3_code}",
        "Name: {0}",
        "No fields",
        "{title!r}, {full_price}",
        "{title",
        "{a.b}",
    ],
)
def test_unparseable_templates_fail_clearly(template: str) -> None:
    with pytest.raises(ConfigError, match="answer_template"):
        parse_answer("anything", template)


titles = (
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs",),
            blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
        ),
        min_size=1,
        max_size=60,
    )
    .map(str.strip)
    .filter(bool)
)
categories = st.from_regex(r"[a-z][a-z0-9_\- ]{0,20}[a-z0-9]", fullmatch=True)
prices = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(title=titles, category=categories, price=prices)
def test_round_trip_default_template(title: str, category: str, price: float) -> None:
    text = format_answer(row(title, category, price), DEFAULT_TEMPLATE)
    parsed = parse_answer(text)
    assert parsed.ok, (text, parsed.error)
    assert parsed.title == title
    assert parsed.category == category
    assert math.isclose(parsed.price, float(f"{price:.2f}"), rel_tol=0, abs_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(title=titles, category=categories, price=prices)
def test_round_trip_custom_template(title: str, category: str, price: float) -> None:
    template = "{title} (in {category3_code}) costs {full_price:,.2f} dollars"
    parsed = parse_answer(format_answer(row(title, category, price), template), template)
    assert parsed.ok, parsed.error
    assert (parsed.title, parsed.category) == (title, category)
    assert parsed.price == pytest.approx(float(f"{price:.2f}"))
