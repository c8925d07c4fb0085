"""A synthetic product catalog whose answers are visible in the pictures.

Two presets. `realistic` (the default; `vistune.data.sample_realistic`) has the variety of a
real catalog: a category hierarchy with 24 `category3_code`s, 8 materials, 12 named colours,
4 patterns, 3 sizes, mostly unique titles and long-tailed prices. `simple` (this module) is
the small catalog below, which a tiny model learns in minutes. Both write the hidden
attribute columns (`schema.ATTRIBUTE_COLUMNS`) next to the real schema, so `prepare` can hold
out attribute combinations and the evaluation can split by combination seen or unseen.

The simple preset: each product has four visible attributes: category (silhouette),
material (colour and noise texture), a check pattern or not, and a size (drawn large or
small). The title is
spelled from them ("Large Check Cashmere Scarf") and the price is a function of them plus
a little noise, rounded to brand-like price points:

    price = base[category] × factor[material] × 1.3 (check) × 1.25 (large) × U(0.95, 1.05)

so a model that reads the picture can beat any price baseline that does not, and a blank
image cannot answer. Categories are unequal in size, like a real catalog, and prices are
right-skewed (bases from 290 to 1,890 times multiplicative factors).

Many products share one attribute combination, hence one title (8 × 5 × 2 × 2 = 160
combinations for ~2,500 products at the default size): a product in the test split is an
unseen product (its own jitter in position, scale, background and texture noise) whose
attribute combination almost always also occurs in training; only the rarest combinations
can fall in one split alone. Composing unseen combinations is a harder task that this
catalog does not try to measure.

About 18 % of products have a second row sharing the product code and image (a later
`competence_date`, or a discount row with `flg_discount = 1` and `price < full_price`),
so a random row split would leak; `prepare` splits by group.

`faults > 0` injects the faults a real catalog has, each one `prepare` must catch and
report: missing and truncated image files, non-numeric and negative prices (the
`full_price` column then holds formatted strings, as scraped catalogs do), duplicate rows
and empty titles.

Everything is deterministic for a seed; images render in a process pool for big catalogs.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pydantic import Field

from vistune.config import VistuneConfig
from vistune.data import sample_realistic, schema


@dataclass(frozen=True)
class Category:
    code: str  # category3_code
    group: str  # category2_code
    noun: str  # how a title names one item
    base_price: float
    weight: float  # share of the catalog


@dataclass(frozen=True)
class Material:
    name: str
    rgb: tuple[int, int, int]
    noise: float  # std of the luminance noise, 0-255 scale
    grain: int  # noise cell size in (2x canvas) pixels: larger = coarser texture
    factor: float  # price multiplier


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("T-SHIRTS", "CLOTHING", "T-shirt", 390.0, 0.21),
    Category("SCARVES", "ACCESSORIES", "Scarf", 490.0, 0.18),
    Category("BAGS", "BAGS", "Tote Bag", 1290.0, 0.16),
    Category("SNEAKERS", "SHOES", "Sneakers", 650.0, 0.12),
    Category("TRENCH COATS", "CLOTHING", "Trench Coat", 1890.0, 0.11),
    Category("CAPS", "ACCESSORIES", "Baseball Cap", 290.0, 0.09),
    Category("BELTS", "ACCESSORIES", "Belt", 450.0, 0.07),
    Category("WALLETS", "SMALL LEATHER GOODS", "Wallet", 520.0, 0.06),
)

MATERIALS: Final[tuple[Material, ...]] = (
    Material("Cotton", (226, 220, 204), 10.0, 1, 1.0),
    Material("Wool", (120, 122, 130), 26.0, 6, 1.3),
    Material("Silk", (160, 28, 48), 7.0, 12, 1.6),
    Material("Leather", (84, 52, 32), 16.0, 2, 1.8),
    Material("Cashmere", (196, 152, 96), 14.0, 3, 2.2),
)
MATERIAL_WEIGHTS: Final[tuple[float, ...]] = (0.30, 0.22, 0.14, 0.20, 0.14)

CHECK_SHARE: Final = 0.35
CHECK_FACTOR: Final = 1.3
LARGE_SHARE: Final = 0.4
LARGE_FACTOR: Final = 1.25
PRICE_NOISE: Final = 0.05  # U(1 - x, 1 + x)
DRAWN_SCALE: Final = {False: 0.62, True: 0.92}  # share of the canvas the item spans
SECOND_ROW_SHARE: Final = 0.18  # products that appear in two rows
DISCOUNTS: Final = (0.2, 0.3, 0.4)
EUR_PER_USD: Final = 0.92
DATES: Final = ("2023-11-17", "2023-12-15")
GENDERS: Final = (("WOMEN", 0.55), ("MEN", 0.45))
WEBSITE: Final = "sample.vistune.test"
BRAND: Final = "VISTUNE SAMPLE"

FAULT_KINDS: Final[tuple[str, ...]] = (
    "missing_image",
    "corrupt_image",
    "non_numeric_price",
    "negative_price",
    "duplicate_row",
    "empty_title",
)
NON_NUMERIC_PRICES: Final = ("N/A", "call for price", "TBD")
POOL_THRESHOLD: Final = 400  # below this many images, a process pool costs more than it saves


PRESETS: Final = ("realistic", "simple")
Preset = Literal["realistic", "simple"]


class SampleConfig(VistuneConfig):
    """Options of `vistune sample`; saved as `OUT/sample.yaml`."""

    out: Path
    preset: Preset = "realistic"
    rows: int = Field(3040, ge=1)
    seed: int = 0
    image_size: int = Field(128, ge=16, le=2048)
    faults: float = Field(0.0, ge=0.0, le=0.5)


@dataclass(frozen=True)
class Product:
    index: int
    category: Category
    material: Material
    check: bool
    large: bool
    price: float

    @property
    def title(self) -> str:
        words = ["Large"] if self.large else []
        words += ["Check"] if self.check else []
        return " ".join([*words, self.material.name, self.category.noun])

    @property
    def code(self) -> str:
        return f"{80_000_000 + self.index * 7 + 3:08d}"

    def attributes(self) -> dict[str, str]:
        """The hidden attribute columns this preset has (no colour or line: one per material)."""
        return {
            "material": self.material.name,
            "pattern": "Check" if self.check else "Plain",
            "size": "Large" if self.large else "Regular",
        }


def price_point(value: float) -> float:
    """Round to a brand-like price point: tens below 1,000, fifties above."""
    step = 10.0 if value < 1000 else 50.0
    return max(step, round(value / step) * step)


def list_price(category: Category, material: Material, check: bool, large: bool) -> float:
    """The noise-free price of an attribute combination (what a perfect model can learn)."""
    price = category.base_price * material.factor
    price *= CHECK_FACTOR if check else 1.0
    price *= LARGE_FACTOR if large else 1.0
    return price


def generate_catalog(
    out_dir: str | Path,
    rows: int = 3040,
    seed: int = 0,
    image_size: int = 128,
    faults: float = 0.0,
    workers: int | None = None,
    preset: Preset = "realistic",
) -> pd.DataFrame:
    """Write `out_dir/catalog.parquet` and `out_dir/images/`; return the catalog.

    `faults` is the share of rows made faulty (at least one of each kind when > 0 and the
    catalog is big enough), cycling through `FAULT_KINDS`. `workers` caps the render pool.
    """
    if rows < 1:
        raise ValueError("rows must be >= 1")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_faults = _fault_count(rows, faults)
    n_duplicates = sum(1 for i in range(n_faults) if FAULT_KINDS[i % 6] == "duplicate_row")
    if preset == "simple":
        products, records = _catalog_rows(rng, rows - n_duplicates)
        jobs: list = [
            _RenderJob(
                p.index, p.category.code, p.material.name, p.check, p.large, seed, image_size
            )
            for p in products
        ]
        render = render_job
    elif preset == "realistic":
        products, records = _realistic_rows(rng, rows - n_duplicates)
        jobs = [sample_realistic.job_of(p, seed, image_size) for p in products]
        render = sample_realistic.render_job
    else:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    frame = pd.DataFrame.from_records(records)
    frame, fault_plan = _inject_faults(frame, rng, n_faults, n_duplicates)

    images = _render_all(jobs, workers, render)
    for image_path, data in zip((f"images/{p.code}.jpg" for p in products), images, strict=True):
        kind = fault_plan.get(image_path)
        if kind == "missing_image":
            continue
        if kind == "corrupt_image":
            data = data[: max(16, len(data) * 2 // 5)]
        (out_dir / image_path).write_bytes(data)
    frame.to_parquet(out_dir / "catalog.parquet", index=False)
    return frame


def _fault_count(rows: int, faults: float) -> int:
    if faults <= 0:
        return 0
    count = round(rows * faults)
    if rows >= 4 * len(FAULT_KINDS):  # big enough to afford one of each kind
        count = max(count, len(FAULT_KINDS))
    return min(count, rows // 4)


def _catalog_rows(rng: np.random.Generator, rows: int) -> tuple[list[Product], list[dict]]:
    """Draw products until `rows` rows exist; returns the products and the row records."""
    cat_p = np.array([c.weight for c in CATEGORIES])
    mat_p = np.array(MATERIAL_WEIGHTS)
    products: list[Product] = []
    records: list[dict] = []
    while len(records) < rows:
        index = len(products)
        category = CATEGORIES[rng.choice(len(CATEGORIES), p=cat_p / cat_p.sum())]
        material = MATERIALS[rng.choice(len(MATERIALS), p=mat_p / mat_p.sum())]
        check = bool(rng.random() < CHECK_SHARE)
        large = bool(rng.random() < LARGE_SHARE)
        noise = rng.uniform(1 - PRICE_NOISE, 1 + PRICE_NOISE)
        price = price_point(list_price(category, material, check, large) * noise)
        product = Product(index, category, material, check, large, price)
        products.append(product)
        gender = GENDERS[0][0] if rng.random() < GENDERS[0][1] else GENDERS[1][0]
        base = _record(product, gender, DATES[0], price)
        records.append(base)
        if len(records) < rows and rng.random() < SECOND_ROW_SHARE:
            if rng.random() < 0.5:
                sale = price_point(price * (1 - DISCOUNTS[rng.integers(len(DISCOUNTS))]))
                records.append(_record(product, gender, DATES[0], sale))
            else:
                records.append(_record(product, gender, DATES[1], price))
    return products, records


def _realistic_rows(
    rng: np.random.Generator, rows: int
) -> tuple[list[sample_realistic.Product], list[dict]]:
    """Realistic products until `rows` rows exist: some styles listed again under a second
    product code (own photo), some products with a discount or later-date second row."""
    products: list[sample_realistic.Product] = []
    records: list[dict] = []
    while len(records) < rows:
        product = sample_realistic.draw_product(rng, len(products), price_point)
        listings = [product]
        if rng.random() < sample_realistic.RELISTED_SHARE:
            listings.append(sample_realistic.relist(product, len(products) + 1))
        for listing in listings:
            if len(records) >= rows:
                break
            products.append(listing)
            records.append(_record(listing, listing.audience, DATES[0], listing.price))
            if len(records) < rows and rng.random() < SECOND_ROW_SHARE:
                if rng.random() < 0.5:
                    cut = DISCOUNTS[rng.integers(len(DISCOUNTS))]
                    sale = price_point(listing.price * (1 - cut))
                    records.append(_record(listing, listing.audience, DATES[0], sale))
                else:
                    records.append(_record(listing, listing.audience, DATES[1], listing.price))
    return products, records


def _record(product, gender: str, date: str, price: float) -> dict:
    """One catalog row in the real schema, the image path and the hidden attribute columns."""
    slug = product.title.lower().replace(" ", "-")
    return {
        "website_name": WEBSITE,
        "competence_date": date,
        "country_code": "USA",
        "currency_code": "USD",
        "brand": BRAND,
        "category1_code": gender,
        "category2_code": product.category.group,
        "category3_code": product.category.code,
        "product_code": product.code,
        "title": product.title,
        "itemurl": f"https://{WEBSITE}/{slug}-p{product.code}",
        "imageurl": f"https://{WEBSITE}/images/{product.code}.jpg",
        "full_price": product.price,
        "price": price,
        "full_price_eur": round(product.price * EUR_PER_USD, 2),
        "price_eur": round(price * EUR_PER_USD, 2),
        "flg_discount": int(price < product.price),
        schema.IMAGE: f"images/{product.code}.jpg",
        **product.attributes(),
    }


def _inject_faults(
    frame: pd.DataFrame, rng: np.random.Generator, n_faults: int, n_duplicates: int
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Apply the planned faults; returns the frame and {image path: image fault kind}."""
    if n_faults == 0:
        return frame, {}
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(n_faults)]
    # Faults go to products with a single row, so a fault never hides behind a twin row.
    single = frame.groupby(schema.PRODUCT)[schema.PRODUCT].transform("size") == 1
    candidates = rng.permutation(np.flatnonzero(single.to_numpy()))
    row_faults = [k for k in kinds if k != "duplicate_row"]
    targets = candidates[: len(row_faults)]
    dup_sources = candidates[len(row_faults) : len(row_faults) + n_duplicates]

    prices = frame[schema.PRICE].to_numpy()
    formats = ("${:,.2f}", "{:.0f}", "{:.2f}", "USD {:,.0f}")
    as_text = [
        formats[i].format(p)
        for i, p in zip(rng.integers(len(formats), size=len(prices)), prices, strict=True)
    ]
    frame = frame.copy()
    frame[schema.PRICE] = as_text
    image_faults: dict[str, str] = {}
    for row, kind in zip(targets, row_faults, strict=False):
        if kind in ("missing_image", "corrupt_image"):
            image_faults[frame.at[row, schema.IMAGE]] = kind
        elif kind == "non_numeric_price":
            frame.at[row, schema.PRICE] = NON_NUMERIC_PRICES[row % len(NON_NUMERIC_PRICES)]
        elif kind == "negative_price":
            frame.at[row, schema.PRICE] = f"-{prices[row]:.2f}"
        elif kind == "empty_title":
            frame.at[row, schema.TITLE] = ""
    # A duplicate is an exact copy inserted somewhere after its original.
    order = list(range(len(frame)))
    for source in sorted(dup_sources.tolist(), reverse=True):
        position = int(rng.integers(source + 1, len(order) + 1))
        order.insert(position, source)
    return frame.iloc[order].reset_index(drop=True), image_faults


# ---------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class _RenderJob:
    index: int
    category: str
    material: str
    check: bool
    large: bool
    seed: int
    size: int


def _render_all(jobs: Sequence, workers: int | None, render=None) -> list[bytes]:
    render = render or render_job
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < POOL_THRESHOLD:
        return [render(job) for job in jobs]
    chunk = max(16, math.ceil(len(jobs) / (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(render, jobs, chunksize=chunk))


def render_job(job: _RenderJob) -> bytes:
    """Render one product to JPEG bytes (top-level so a process pool can pickle it)."""
    category = next(c for c in CATEGORIES if c.code == job.category)
    material = next(m for m in MATERIALS if m.name == job.material)
    image = render_product(category, material, job.check, job.large, job.size, job.seed, job.index)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def render_product(
    category: Category,
    material: Material,
    check: bool,
    large: bool,
    size: int,
    seed: int,
    index: int,
) -> Image.Image:
    """Draw one product at 2x `size` and downscale (smooth edges, averaged noise).

    The per-product jitter (position, scale, background tint, texture noise) comes from
    (seed, index), so two products with the same attributes still differ.
    """
    rng = np.random.default_rng([seed, index, 0x5EED])
    canvas = 2 * size
    scale = DRAWN_SCALE[large] * rng.uniform(0.94, 1.06)
    slack = max(0.0, (1.0 - scale) / 2 * 0.85)
    cx = 0.5 + rng.uniform(-slack, slack)
    cy = 0.5 + rng.uniform(-slack, slack)
    tint = int(rng.integers(232, 250))
    background = Image.new("RGB", (canvas, canvas), (tint, tint, min(255, tint + 3)))

    def xy(u: float, v: float) -> tuple[float, float]:
        return ((cx + u * scale) * canvas, (cy + v * scale) * canvas)

    mask = Image.new("L", (canvas, canvas), 0)
    _SHAPES[category.code](ImageDraw.Draw(mask), xy, scale * canvas)

    texture = _texture(material, canvas, rng)
    if check:
        _draw_check(texture, xy, scale * canvas)
    background.paste(texture, (0, 0), mask)
    if category.code == "BELTS":  # the buckle is metal whatever the strap is made of
        ImageDraw.Draw(background).rectangle(
            [xy(-0.36, -0.1), xy(-0.2, 0.1)], outline=(200, 170, 60), width=max(2, canvas // 40)
        )
    if category.code == "SNEAKERS":  # a white sole under any upper
        ImageDraw.Draw(background).rectangle([xy(-0.5, 0.25), xy(0.5, 0.34)], fill=(250, 250, 250))
    return background.reduce(2)


def _texture(material: Material, canvas: int, rng: np.random.Generator) -> Image.Image:
    cells = max(1, canvas // material.grain)
    noise = rng.normal(0.0, material.noise, size=(cells, cells)).astype(np.float32)
    if material.grain > 1:
        noise = np.kron(noise, np.ones((material.grain, material.grain), np.float32))
    noise = noise[:canvas, :canvas]
    if noise.shape[0] < canvas:
        noise = np.pad(noise, ((0, canvas - noise.shape[0]), (0, canvas - noise.shape[1])))
    pixels = np.asarray(material.rgb, np.float32)[None, None, :] + noise[:, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_check(texture: Image.Image, xy, span: float) -> None:
    """A house check: dark bands, a thin red line and a thin white line, both directions."""
    draw = ImageDraw.Draw(texture)
    period = span / 5
    wide, thin = max(2, round(period * 0.16)), max(1, round(period * 0.05))
    x0, y0 = xy(-0.5, -0.5)
    for k in range(-1, 7):
        for offset, width, colour in (
            (0.0, wide, (24, 24, 24)),
            (0.42, thin, (190, 20, 30)),
            (0.7, thin, (245, 245, 245)),
        ):
            pos_x = x0 + (k + offset) * period
            pos_y = y0 + (k + offset) * period
            draw.line([(pos_x, 0), (pos_x, texture.height)], fill=colour, width=width)
            draw.line([(0, pos_y), (texture.width, pos_y)], fill=colour, width=width)


def _shape_tshirt(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    outline = [(-0.18, -0.4), (0.18, -0.4), (0.5, -0.2), (0.4, 0.02), (0.28, -0.06),
               (0.28, 0.42), (-0.28, 0.42), (-0.28, -0.06), (-0.4, 0.02), (-0.5, -0.2)]  # fmt: skip
    draw.polygon([xy(u, v) for u, v in outline], fill=255)
    draw.ellipse([xy(-0.1, -0.48), xy(0.1, -0.32)], fill=0)


def _shape_scarf(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    draw.rectangle([xy(-0.16, -0.4), xy(0.16, 0.4)], fill=255)
    for k in range(7):
        u = -0.14 + k * 0.28 / 6
        width = max(1, round(span * 0.015))
        draw.line([xy(u, -0.5), xy(u, -0.4)], fill=255, width=width)
        draw.line([xy(u, 0.4), xy(u, 0.5)], fill=255, width=width)


def _shape_bag(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    draw.polygon([xy(-0.4, -0.1), xy(0.4, -0.1), xy(0.5, 0.45), xy(-0.5, 0.45)], fill=255)
    draw.arc([xy(-0.25, -0.5), xy(0.25, 0.1)], 180, 360, fill=255, width=max(2, round(span * 0.06)))


def _shape_sneaker(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    outline = [(-0.5, 0.05), (-0.45, -0.18), (-0.12, -0.22), (0.02, -0.06), (0.38, 0.0),
               (0.5, 0.14), (0.5, 0.26), (-0.5, 0.26)]  # fmt: skip
    draw.polygon([xy(u, v) for u, v in outline], fill=255)


def _shape_trench(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    outline = [(-0.2, -0.5), (0.2, -0.5), (0.38, -0.4), (0.48, 0.2), (0.36, 0.22), (0.3, -0.12),
               (0.36, 0.5), (-0.36, 0.5), (-0.3, -0.12), (-0.36, 0.22), (-0.48, 0.2),
               (-0.38, -0.4)]  # fmt: skip
    draw.polygon([xy(u, v) for u, v in outline], fill=255)
    draw.polygon([xy(-0.08, -0.5), xy(0.08, -0.5), xy(0.0, -0.3)], fill=0)  # open collar


def _shape_cap(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    draw.chord([xy(-0.38, -0.35), xy(0.3, 0.45)], 180, 360, fill=255)
    draw.polygon([xy(0.2, 0.0), xy(0.5, 0.06), xy(0.5, 0.12), xy(0.2, 0.1)], fill=255)


def _shape_belt(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    draw.rectangle([xy(-0.5, -0.06), xy(0.5, 0.06)], fill=255)


def _shape_wallet(draw: ImageDraw.ImageDraw, xy, span: float) -> None:
    draw.rectangle([xy(-0.34, -0.22), xy(0.34, 0.22)], fill=255)
    draw.line([xy(-0.34, -0.02), xy(0.34, -0.02)], fill=0, width=max(1, round(span * 0.02)))


_SHAPES: Final = {
    "T-SHIRTS": _shape_tshirt,
    "SCARVES": _shape_scarf,
    "BAGS": _shape_bag,
    "SNEAKERS": _shape_sneaker,
    "TRENCH COATS": _shape_trench,
    "CAPS": _shape_cap,
    "BELTS": _shape_belt,
    "WALLETS": _shape_wallet,
}
