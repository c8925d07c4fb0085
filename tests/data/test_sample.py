"""The simple sample preset: schema, determinism, visible attributes, price rule, faults.

The realistic preset (the default) is tested in test_sample_realistic.py.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vistune.data import schema
from vistune.data.prices import PriceError, parse_price
from vistune.data.sample import (
    CATEGORIES,
    CHECK_FACTOR,
    LARGE_FACTOR,
    MATERIALS,
    generate_catalog,
    render_product,
)


def attributes_from_title(title: str) -> tuple[str, str, bool, bool]:
    """Independent reading of a title: (category code, material, check, large)."""
    words = title.split()
    large = words[0] == "Large"
    words = words[1:] if large else words
    check = words[0] == "Check"
    words = words[1:] if check else words
    material, noun = words[0], " ".join(words[1:])
    category = {c.noun: c.code for c in CATEGORIES}[noun]
    return category, material, check, large


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, object]:
    out = tmp_path_factory.mktemp("catalog")
    return generate_catalog(out, rows=300, seed=3, image_size=48, preset="simple"), out


def test_columns_are_the_real_dataset_plus_image(catalog) -> None:
    frame, out = catalog
    assert list(frame.columns) == [
        *schema.REAL_COLUMNS,
        schema.IMAGE,
        "material",
        "pattern",
        "size",
    ]
    assert len(frame) == 300
    stored = pd.read_parquet(out / "catalog.parquet")
    pd.testing.assert_frame_equal(stored, frame)
    assert stored["full_price"].dtype == np.float64
    assert all((out / path).is_file() for path in stored["image"])


def test_same_seed_same_catalog_and_images(tmp_path) -> None:
    a = generate_catalog(tmp_path / "a", rows=40, seed=7, image_size=32, preset="simple")
    b = generate_catalog(tmp_path / "b", rows=40, seed=7, image_size=32, workers=1, preset="simple")
    c = generate_catalog(tmp_path / "c", rows=40, seed=8, image_size=32, preset="simple")
    pd.testing.assert_frame_equal(a, b)
    for path in a["image"]:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    assert not a["title"].equals(c["title"])


def test_price_follows_visible_attributes(catalog) -> None:
    frame, _ = catalog
    bases = {c.code: c.base_price for c in CATEGORIES}
    factors = {m.name: m.factor for m in MATERIALS}
    for row in frame.itertuples():
        category, material, check, large = attributes_from_title(row.title)
        assert category == row.category3_code
        assert (row.material, row.pattern, row.size) == (
            material,
            "Check" if check else "Plain",
            "Large" if large else "Regular",
        )
        expected = bases[category] * factors[material]
        expected *= (CHECK_FACTOR if check else 1) * (LARGE_FACTOR if large else 1)
        assert 0.93 < row.full_price / expected < 1.07, row
        step = 10 if row.full_price < 1000 else 50
        assert row.full_price % step == 0


def test_catalog_shape_is_like_a_real_one(catalog) -> None:
    frame, _ = catalog
    counts = frame["category3_code"].value_counts()
    assert len(counts) == len(CATEGORIES)
    assert counts.max() >= 2 * counts.min()  # unequal categories
    assert frame["full_price"].skew() > 0.5  # right-skewed prices
    per_product = frame.groupby("product_code").agg(
        rows=("title", "size"), titles=("title", "nunique"), images=("image", "nunique")
    )
    assert (per_product["titles"] == 1).all() and (per_product["images"] == 1).all()
    assert 0.05 < (per_product["rows"] == 2).mean() < 0.35
    discounted = frame[frame["flg_discount"] == 1]
    assert len(discounted) > 0
    assert (discounted["price"] < discounted["full_price"]).all()
    full = frame[frame["flg_discount"] == 0]
    assert (full["price"] == full["full_price"]).all()
    # Many products share a title: held-out products have seen attribute combinations.
    assert frame["title"].nunique() < frame["product_code"].nunique() / 2


def test_products_with_the_same_title_have_different_images(catalog) -> None:
    frame, out = catalog
    products = frame.drop_duplicates("product_code")
    title = products["title"].value_counts().index[0]
    paths = products.loc[products["title"] == title, "image"].tolist()
    assert len(paths) >= 2
    digests = {(out / p).read_bytes() for p in paths}
    assert len(digests) == len(paths)


def covered_share(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    corner = pixels[:2, :2].reshape(-1, 3).mean(axis=0)
    return float((np.abs(pixels - corner).sum(axis=2) > 30).mean())


def test_size_and_material_are_visible() -> None:
    scarf = CATEGORIES[[c.code for c in CATEGORIES].index("TRENCH COATS")]
    silk, cotton = MATERIALS[2], MATERIALS[0]
    small = render_product(scarf, silk, False, False, 64, seed=0, index=1)
    large = render_product(scarf, silk, False, True, 64, seed=0, index=1)
    assert covered_share(large) > 1.5 * covered_share(small)
    red = np.asarray(small)[32, 32].astype(int)
    white = np.asarray(render_product(scarf, cotton, False, False, 64, 0, 1))[32, 32].astype(int)
    assert np.abs(red - np.array(silk.rgb)).sum() < 90
    assert np.abs(white - np.array(cotton.rgb)).sum() < 60


def test_every_fault_kind_is_injected(tmp_path) -> None:
    frame = generate_catalog(tmp_path, rows=120, seed=1, image_size=32, faults=0.1, preset="simple")
    assert len(frame) == 120
    files = [tmp_path / p for p in frame["image"].drop_duplicates()]
    missing = [f for f in files if not f.exists()]
    assert len(missing) >= 1
    corrupt = []
    for f in files:
        if f.exists():
            try:
                Image.open(io.BytesIO(f.read_bytes())).load()
            except OSError:
                corrupt.append(f)
    assert len(corrupt) >= 1
    reasons = []
    for value in frame["full_price"]:
        try:
            parse_price(value)
        except PriceError as err:
            reasons.append(err.reason)
    assert schema.NON_NUMERIC_PRICE in reasons and schema.NEGATIVE_PRICE in reasons
    assert frame.duplicated().sum() >= 1
    assert (frame["title"] == "").sum() >= 1
