"""The answer format the model is trained to produce, and its strict parser.

Default target (the reference format, kept so results compare with it):
`Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}`.
Titles may contain commas and label-like words, so parsing works from the right on the
fixed labels. A failed parse is a failure with a reason, never a price of 0.

The parser is derived from the template string itself, so a custom `answer_template` in a
training config is parsed with the same rules: literal text between fields is the label,
fields are read right to left, the leftmost field (the title in the default) takes whatever
is left and may contain anything. Templates whose fields are not separated by literal text
cannot be parsed unambiguously and raise `ConfigError` up front.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from vistune.errors import ConfigError

DEFAULT_QUESTION = "What is shown in this image?"
DEFAULT_TEMPLATE = "Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}"


def format_answer(row: Mapping[str, Any], template: str = DEFAULT_TEMPLATE) -> str:
    """Render the training target for one catalog row."""
    return template.format(**row)


#: Template field names that fill `ParsedAnswer.title` / `.category` / `.price`.
TITLE_FIELDS = ("title",)
CATEGORY_FIELDS = ("category3_code", "category", "category2_code", "category1_code")
PRICE_FIELDS = ("full_price", "price", "full_price_eur", "price_eur")

# "$1,290.00", "1290", "1290.5", "USD 1,290" — thousands separators must be well placed.
_PRICE_RE = re.compile(
    r"^(?:US\$|\$|USD\s*)?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)\s*(?:USD)?$"
)


@dataclass(frozen=True)
class ParsedAnswer:
    """What a generated answer says, or why it could not be read.

    `error` is None exactly when every field of the template was found; then `title`,
    `category` and `price` hold the values of the fields the template has (None for a field
    the template does not contain). On failure all values are None: a half-read answer is
    not scored as partly right, and the price is never defaulted to 0.
    """

    title: str | None = None
    category: str | None = None
    price: float | None = None
    error: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _TemplateSpec:
    prefix: str  # literal text before the first field
    names: tuple[str, ...]  # field names, left to right
    separators: tuple[str, ...]  # literal text after each field (last one is the suffix)
    price_field: str | None


@lru_cache(maxsize=32)
def template_spec(template: str) -> _TemplateSpec:
    """Split an answer template into labels and fields; ConfigError if it is ambiguous."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"answer_template {template!r}: not a valid format string ({exc})"
        ) from exc
    prefix = ""
    names: list[str] = []
    separators: list[str] = []
    for literal, name, _spec, conversion in parts:
        if names:
            separators[-1] += literal
        else:
            prefix += literal
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ConfigError(
                f"answer_template {template!r}: field {{{name}}} must be a column name "
                "(no positional, attribute or index fields)"
            )
        if conversion:
            raise ConfigError(
                f"answer_template {template!r}: conversions like !r are not parseable"
            )
        if name in names:
            raise ConfigError(f"answer_template {template!r}: field {{{name}}} appears twice")
        if names and not separators[-1]:
            raise ConfigError(
                f"answer_template {template!r}: fields {{{names[-1]}}} and {{{name}}} have no "
                "label between them, so an answer cannot be split; put text such as ', Category: '"
                " between every two fields"
            )
        names.append(name)
        separators.append("")
    if not names:
        raise ConfigError(f"answer_template {template!r}: has no {{field}} to parse")
    price_fields = [n for n in names if n in PRICE_FIELDS]
    return _TemplateSpec(
        prefix=prefix,
        names=tuple(names),
        separators=tuple(separators),
        price_field=price_fields[0] if price_fields else None,
    )


def parse_price(text: str) -> float | None:
    """A non-negative finite price from "$1,290.00", "1290" or "1290.5"; None if not a price."""
    match = _PRICE_RE.match(text.strip())
    if match is None:
        return None
    value = float(match.group("num").replace(",", ""))
    return value if math.isfinite(value) else None


def parse_answer(text: str, template: str = DEFAULT_TEMPLATE) -> ParsedAnswer:
    """Read a generated answer written in `template`'s format.

    The fields are located from the right: the suffix must end the answer, then each field's
    value is what follows the rightmost occurrence of the label before it. So in the default
    template the price and category are found first and the title keeps every comma or
    "Category:"-like word it contains. Whitespace around the whole answer is ignored; any
    other deviation (missing label, empty field, text after the price, unreadable price) is a
    failure with a reason.
    """
    spec = template_spec(template)
    if not isinstance(text, str):
        return ParsedAnswer(error=f"answer is not text ({type(text).__name__})")
    rest = text.strip()
    if not rest:
        return ParsedAnswer(error="empty answer")
    suffix = spec.separators[-1].rstrip()
    if suffix:
        if not rest.endswith(suffix):
            return ParsedAnswer(error=f"answer does not end with {suffix!r}")
        rest = rest[: len(rest) - len(suffix)]
    values: dict[str, str] = {}
    for index in range(len(spec.names) - 1, 0, -1):
        name, label = spec.names[index], spec.separators[index - 1]
        cut = rest.rfind(label)
        if cut < 0:
            return ParsedAnswer(error=f"label {label.strip()!r} not found before {name}")
        values[name] = rest[cut + len(label) :]
        rest = rest[:cut]
    prefix = spec.prefix.lstrip()
    if not rest.startswith(prefix):
        return ParsedAnswer(error=f"answer does not start with {prefix.strip()!r}")
    values[spec.names[0]] = rest[len(prefix) :]
    for name in spec.names:
        if not values[name].strip():
            return ParsedAnswer(error=f"empty {name}")
    price = None
    if spec.price_field is not None:
        price = parse_price(values[spec.price_field])
        if price is None:
            raw = values[spec.price_field]
            return ParsedAnswer(error=f"{spec.price_field} {raw.strip()[:40]!r} is not a price")
    ordered = {name: values[name] for name in spec.names}
    return ParsedAnswer(
        title=_first(ordered, TITLE_FIELDS),
        category=_first(ordered, CATEGORY_FIELDS),
        price=price,
        fields=ordered,
    )


def _first(values: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in values:
            return values[name]
    return None
