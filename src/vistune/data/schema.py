"""Column names shared by the sample generator, `prepare` and every consumer of a dataset dir.

The canonical columns are what training, evaluation and serving read; `REAL_COLUMNS` are the
columns of the public Burberry catalog (DBQ/Burberry.Product.prices.United.States), which the
sample generator reproduces so a pipeline tuned on sample data runs unchanged on real data.
"""

from __future__ import annotations

from typing import Final

#: Columns of DBQ/Burberry.Product.prices.United.States, in the published order.
REAL_COLUMNS: Final[tuple[str, ...]] = (
    "website_name",
    "competence_date",
    "country_code",
    "currency_code",
    "brand",
    "category1_code",
    "category2_code",
    "category3_code",
    "product_code",
    "title",
    "itemurl",
    "imageurl",
    "full_price",
    "price",
    "full_price_eur",
    "price_eur",
    "flg_discount",
)

IMAGE: Final = "image"
TITLE: Final = "title"
CATEGORY: Final = "category3_code"
PRICE: Final = "full_price"
PRODUCT: Final = "product_code"
SOURCE_ROW: Final = "source_row"
SOURCE_IMAGE: Final = "source_image"

#: Columns every prepared split holds (plus the other source columns).
CANONICAL_COLUMNS: Final[tuple[str, ...]] = (IMAGE, TITLE, CATEGORY, PRICE, SOURCE_ROW, PRODUCT)

#: Hidden attribute columns `vistune sample` writes next to the real schema (a real catalog
#: has none): what the picture shows (material, colour, pattern, size) and a line name it
#: cannot show. The simple preset writes material, pattern and size only.
ATTRIBUTE_COLUMNS: Final[tuple[str, ...]] = ("material", "colour", "pattern", "size", "line")
#: The attribute combination that sets a sample product's price (colour and line do not):
#: what `prepare --holdout-combinations` holds out and the evaluation calls seen or unseen.
COMBINATION_COLUMNS: Final[tuple[str, ...]] = (CATEGORY, "material", "pattern", "size")

#: The split names, in the order they are written and reported.
SPLITS: Final[tuple[str, ...]] = ("train", "validation", "test")

#: Source columns tried, in order, when no explicit mapping is given for a canonical column.
DEFAULT_CANDIDATES: Final[dict[str, tuple[str, ...]]] = {
    IMAGE: ("image", "imageurl", "image_url", "img", "file_name", "image_path"),
    TITLE: ("title", "name", "product_name", "text", "caption"),
    CATEGORY: ("category3_code", "category", "label", "category_code"),
    PRICE: ("full_price", "price", "list_price"),
}

# Reasons a row can be dropped, so the manifest and dropped.jsonl use one vocabulary.
DUPLICATE_ROW: Final = "duplicate_row"
EMPTY_TITLE: Final = "empty_title"
MISSING_CATEGORY: Final = "missing_category"
MISSING_PRICE: Final = "missing_price"
NON_NUMERIC_PRICE: Final = "non_numeric_price"
NEGATIVE_PRICE: Final = "negative_price"
MISSING_IMAGE: Final = "missing_image"
INVALID_IMAGE: Final = "invalid_image"
DOWNLOAD_FAILED: Final = "download_failed"
REFUSED_URL: Final = "refused_url"
REFUSED_PATH: Final = "refused_path"  # a local image path outside the source folder
PRICE_OUT_OF_RANGE: Final = "price_out_of_range"  # zero, or above the configured maximum

DROP_REASONS: Final[tuple[str, ...]] = (
    DUPLICATE_ROW,
    EMPTY_TITLE,
    MISSING_CATEGORY,
    MISSING_PRICE,
    NON_NUMERIC_PRICE,
    NEGATIVE_PRICE,
    PRICE_OUT_OF_RANGE,
    MISSING_IMAGE,
    INVALID_IMAGE,
    DOWNLOAD_FAILED,
    REFUSED_URL,
    REFUSED_PATH,
)
