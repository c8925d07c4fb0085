"""The realistic sample preset: a real catalog's variety, every visible attribute visible
at the demo model's 64 px, prices that follow the visible attributes, faults as before."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vistune.data import sample_realistic as real
from vistune.data import schema
from vistune.data.sample import generate_catalog, price_point

MODEL_PX = 64  # what configs/tiny-demo.yaml feeds the model


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("realistic")
    return generate_catalog(out, rows=1500, seed=5, image_size=32, workers=1)


def read_title(title: str) -> dict[str, str]:
    """Independent parse of a title: '[Size] Line [Pattern] Material Noun in Colour'."""
    head, colour = title.rsplit(" in ", 1)
    words = head.split()
    size = words.pop(0) if words[0] in ("Small", "Large") else "Medium"
    line = words.pop(0)
    pattern = words.pop(0) if words[0] in ("Check", "Stripe", "Monogram") else "Plain"
    material = words.pop(0)
    return {"size": size, "line": line, "pattern": pattern, "material": material,
            "noun": " ".join(words), "colour": colour}  # fmt: skip


def test_schema_and_hierarchy(catalog) -> None:
    assert list(catalog.columns) == [*schema.REAL_COLUMNS, schema.IMAGE, *schema.ATTRIBUTE_COLUMNS]
    counts = catalog["category3_code"].value_counts()
    assert len(counts) >= 20
    assert counts.max() >= 4 * counts.min()  # unequal, like a real catalog
    parents = catalog.groupby("category3_code")["category2_code"].nunique()
    assert (parents == 1).all()  # a tree: each category3 under one category2
    assert catalog["category2_code"].nunique() == 5
    assert set(catalog["category1_code"]) == {"WOMEN", "MEN", "CHILDREN"}
    assert catalog.groupby("category2_code")["category3_code"].nunique().min() >= 2


def test_attribute_variety_and_titles_built_from_them(catalog) -> None:
    assert catalog["material"].nunique() >= 8
    assert catalog["colour"].nunique() >= 12
    assert set(catalog["pattern"]) == {"Plain", "Check", "Stripe", "Monogram"}
    assert set(catalog["size"]) == {"Small", "Medium", "Large"}
    nouns = {c.code: c.noun for c in real.CATEGORIES}
    for row in catalog.drop_duplicates("product_code").itertuples():
        parsed = read_title(row.title)
        assert parsed["noun"] == nouns[row.category3_code]
        for column in ("material", "colour", "pattern", "size", "line"):
            assert parsed[column] == getattr(row, column), (column, row.title)


def test_titles_are_mostly_unique_and_some_styles_are_relisted(catalog) -> None:
    products = catalog.drop_duplicates("product_code")
    codes_per_title = products.groupby("title")["product_code"].nunique()
    assert (codes_per_title == 1).mean() > 0.85  # most titles name one product
    assert (codes_per_title == 2).sum() >= 0.03 * len(codes_per_title)  # repeated listings
    relisted = products[products["title"].map(codes_per_title) == 2]
    same = relisted.groupby("title").agg(price=("full_price", "nunique"), img=("image", "nunique"))
    assert (same["img"] == 2).all()  # a repeated listing has its own photo
    assert (same["price"] == 1).mean() > 0.8  # and the style's price (rare clashes aside)


def test_price_is_long_tailed_and_follows_the_visible_attributes(catalog) -> None:
    products = catalog.drop_duplicates("product_code")
    prices = products["full_price"].to_numpy()
    assert pd.Series(prices).skew() > 1.0
    assert np.quantile(prices, 0.99) > 4 * np.median(prices)
    base = {c.code: c.base_price for c in real.CATEGORIES}
    factor = {m.name: m.factor for m in real.MATERIALS}
    pattern = {"Plain": 1.0, "Check": 1.3, "Stripe": 1.1, "Monogram": 1.45}
    size = {"Small": 0.75, "Medium": 1.0, "Large": 1.35}
    ratios = []
    for row in products.itertuples():
        expected = base[row.category3_code] * factor[row.material]
        expected *= pattern[row.pattern] * size[row.size]
        ratios.append(row.full_price / expected)
        assert row.full_price == price_point(row.full_price)
    log_ratio = np.log(np.asarray(ratios))
    assert abs(np.median(log_ratio)) < 0.02  # centred on the attribute price
    assert 0.03 < log_ratio.std() < 0.09  # the documented noise (σ 0.06) plus rounding
    discounted = catalog[catalog["flg_discount"] == 1]
    assert len(discounted) > 0 and (discounted["price"] < discounted["full_price"]).all()
    # Colour does not move the price: within one combination, colours cost the same.
    per_colour = products.assign(r=ratios).groupby("colour")["r"].median()
    assert per_colour.max() / per_colour.min() < 1.06


def model_view(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((MODEL_PX, MODEL_PX), Image.Resampling.BICUBIC), np.float32)


def render(category="SCARVES", material="Cotton", colour="Navy", pattern="", size="",
           index=1) -> np.ndarray:  # fmt: skip
    return model_view(
        real.render_product(
            next(c for c in real.CATEGORIES if c.code == category),
            next(m for m in real.MATERIALS if m.name == material),
            colour,
            next(p for p in real.PATTERNS if p.name == pattern),
            next(s for s in real.SIZES if s.name == size),
            128,
            seed=0,
            index=index,
        )
    )


def item_mask(pixels: np.ndarray) -> np.ndarray:
    return np.abs(pixels - pixels[:2, :2].reshape(-1, 3).mean(axis=0)).sum(axis=2) > 40


def eroded(mask: np.ndarray, steps: int = 2) -> np.ndarray:
    """The mask without its edge pixels (blended with the background when downscaled)."""
    for _ in range(steps):
        mask = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0)
        mask = mask & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return mask


def test_sizes_are_visible_at_64px() -> None:
    covered = [
        item_mask(render("TOTE BAGS", size=s, colour="Black")).mean()
        for s in ("Small", "", "Large")
    ]
    assert covered[0] * 1.4 < covered[1] and covered[1] * 1.4 < covered[2]


def test_every_category_has_its_own_silhouette_at_64px() -> None:
    masks = {
        c.code: item_mask(render(c.code, colour="Black", size="Large")) for c in real.CATEGORIES
    }
    for a, b in itertools.combinations(masks, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.8, (a, b, iou)


def test_colours_are_visible_at_64px() -> None:
    means = {}
    for name, rgb in real.COLOURS.items():
        pixels = render("TOTE BAGS", colour=name, size="Large")
        means[name] = np.median(pixels[item_mask(pixels)], axis=0)
        assert np.abs(means[name] - np.asarray(rgb)).max() < 25, name
    for a, b in itertools.combinations(means, 2):
        assert np.abs(means[a] - means[b]).sum() > 40, (a, b)


def test_materials_and_patterns_differ_at_64px() -> None:
    """Each material (and pattern) changes the item's pixels far more than the per-product
    texture noise does between two products of the same kind."""

    def texture_stats(material="Cotton", pattern="", index=1) -> np.ndarray:
        """Colour mean and spread, and mean change along x, y and both diagonals, inside."""
        pixels = render("TOTE BAGS", material=material, colour="Camel", pattern=pattern,
                        size="Large", index=index).mean(axis=2)  # fmt: skip
        shape = render("TOTE BAGS", colour="Black", size="Large", index=index)
        mask = eroded(item_mask(shape), 3)
        values = [pixels[mask].mean(), pixels[mask].std()]
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            change = np.abs(pixels - np.roll(pixels, (dy, dx), axis=(0, 1)))
            values.append(change[mask].mean())
        return np.asarray(values)

    kinds = [(m.name, "") for m in real.MATERIALS] + [("Cotton", p.name) for p in real.PATTERNS]
    centre, spread = {}, {}
    for material, pattern in kinds:
        stats = np.stack([texture_stats(material, pattern, k) for k in range(1, 5)])
        centre[material, pattern] = stats.mean(axis=0)
        spread[material, pattern] = np.abs(stats - stats.mean(axis=0)).sum(axis=1).max()
    for a, b in itertools.combinations(centre, 2):
        gap = np.abs(centre[a] - centre[b]).sum()
        assert gap > 2 * max(spread[a], spread[b]) and gap > 4, (a, b, gap, spread[a], spread[b])


def test_faults_are_injected_in_the_realistic_catalog_too(tmp_path) -> None:
    frame = generate_catalog(tmp_path, rows=120, seed=1, image_size=32, faults=0.1, workers=1)
    assert len(frame) == 120 and frame.duplicated().sum() >= 1
    assert (frame["title"] == "").sum() >= 1
    assert any(re.fullmatch(r"N/A|call for price|TBD", str(v)) for v in frame["full_price"])
    files = [tmp_path / p for p in frame["image"].drop_duplicates()]
    assert any(not f.exists() for f in files)
