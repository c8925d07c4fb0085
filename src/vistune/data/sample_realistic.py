"""The realistic sample catalog: a luxury brand's range, with the variety of a real one.

What a real catalog (DBQ's Burberry one) has and the simple preset lacks, each drawn so
that what the picture shows can be learned from it at the demo's resolution (64 px):

- a category1 -> category2 -> category3 hierarchy: WOMEN/MEN/CHILDREN, then CLOTHING,
  BAGS, SHOES, ACCESSORIES, SMALL LEATHER GOODS, then 24 `category3_code`s of unequal
  size, each with its own silhouette;
- 8 materials, each a texture structure (flat, blotchy, sheen, outlined, ribbed, twill,
  quilted, flecked) that survives downscaling; 12 named colours; 4 patterns (plain, check,
  stripe, monogram) and 3 drawn sizes (small, medium, large);
- titles in the catalog's style, "Large Kensington Check Cashmere Scarf in Archive Beige":
  the visible attributes plus a line name the picture cannot show, so most titles are
  unique and a model can at best get the visible part right;
- long-tailed prices: a category base (190 to 2,490) times material, pattern and size
  factors, times log-normal noise (σ 0.06), rounded to price points. Colour and line do not
  move the price (colour variants of a style cost the same), so the price is learnable from
  the picture up to the noise;
- repeated listings: about 8 % of styles are listed again under a second product code with
  its own photo (same title, attributes and price), so only `prepare --group-by title`
  keeps them together; plus the discount and later-date rows of the simple preset.

The hidden attribute columns (`material`, `colour`, `pattern`, `size`, `line`) are written
next to the real schema, so `prepare --holdout-combinations` and the evaluation can tell
products whose attribute combination was seen in training from those never seen.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from vistune.data.sample_shapes import SHAPES


@dataclass(frozen=True)
class Category:
    code: str  # category3_code
    group: str  # category2_code
    noun: str
    base_price: float
    weight: float
    audiences: tuple[str, ...]  # category1_code values it is sold under


@dataclass(frozen=True)
class Material:
    name: str
    texture: str  # how `_texture` draws it
    factor: float
    weight: float


@dataclass(frozen=True)
class Pattern:
    name: str  # "" for plain: no title word
    factor: float
    weight: float


@dataclass(frozen=True)
class Size:
    name: str  # "" for medium: no title word
    scale: float  # share of the canvas the item spans
    factor: float
    weight: float


W, M, K = "WOMEN", "MEN", "CHILDREN"
CATEGORIES: Final[tuple[Category, ...]] = (
    Category("T-SHIRTS", "CLOTHING", "T-shirt", 390.0, 0.090, (W, M, K)),
    Category("SHIRTS", "CLOTHING", "Shirt", 590.0, 0.060, (W, M, K)),
    Category("KNITWEAR", "CLOTHING", "Sweater", 890.0, 0.065, (W, M, K)),
    Category("TRENCH COATS", "CLOTHING", "Trench Coat", 2290.0, 0.055, (W, M, K)),
    Category("JACKETS", "CLOTHING", "Jacket", 1690.0, 0.050, (W, M, K)),
    Category("DRESSES", "CLOTHING", "Dress", 1290.0, 0.045, (W, K)),
    Category("SKIRTS", "CLOTHING", "Skirt", 790.0, 0.030, (W, K)),
    Category("TROUSERS", "CLOTHING", "Trousers", 690.0, 0.035, (W, M)),
    Category("SHORTS", "CLOTHING", "Shorts", 450.0, 0.020, (W, M, K)),
    Category("TOTE BAGS", "BAGS", "Tote Bag", 1590.0, 0.060, (W, M)),
    Category("CROSSBODY BAGS", "BAGS", "Crossbody Bag", 1390.0, 0.050, (W, M)),
    Category("BACKPACKS", "BAGS", "Backpack", 1490.0, 0.030, (W, M, K)),
    Category("CLUTCHES", "BAGS", "Clutch", 990.0, 0.020, (W,)),
    Category("SNEAKERS", "SHOES", "Sneakers", 650.0, 0.055, (W, M, K)),
    Category("BOOTS", "SHOES", "Boots", 1190.0, 0.035, (W, M)),
    Category("LOAFERS", "SHOES", "Loafers", 790.0, 0.020, (W, M)),
    Category("SCARVES", "ACCESSORIES", "Scarf", 490.0, 0.075, (W, M, K)),
    Category("CAPS", "ACCESSORIES", "Baseball Cap", 350.0, 0.040, (W, M, K)),
    Category("BUCKET HATS", "ACCESSORIES", "Bucket Hat", 420.0, 0.025, (W, M, K)),
    Category("BELTS", "ACCESSORIES", "Belt", 450.0, 0.030, (W, M)),
    Category("GLOVES", "ACCESSORIES", "Gloves", 390.0, 0.012, (W, M)),
    Category("UMBRELLAS", "ACCESSORIES", "Umbrella", 290.0, 0.010, (W, M)),
    Category("WALLETS", "SMALL LEATHER GOODS", "Wallet", 590.0, 0.040, (W, M)),
    Category("CARD HOLDERS", "SMALL LEATHER GOODS", "Card Holder", 190.0, 0.018, (W, M)),
)

MATERIALS: Final[tuple[Material, ...]] = (
    Material("Cotton", "flat", 1.0, 0.24),
    Material("Wool", "blotchy", 1.35, 0.14),
    Material("Silk", "sheen", 1.7, 0.08),
    Material("Leather", "outlined", 1.9, 0.16),
    Material("Cashmere", "ribbed", 2.4, 0.08),
    Material("Denim", "twill", 0.85, 0.10),
    Material("Nylon", "quilted", 0.9, 0.10),
    Material("Tweed", "flecked", 1.55, 0.10),
)

COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "Archive Beige": (205, 178, 136),
    "Black": (28, 28, 30),
    "Navy": (32, 42, 88),
    "Burgundy": (108, 26, 44),
    "Camel": (172, 122, 72),
    "Olive": (104, 108, 48),
    "Dusty Pink": (212, 150, 158),
    "Sky Blue": (118, 162, 214),
    "Charcoal": (74, 74, 80),
    "Forest Green": (34, 88, 54),
    "Honey": (218, 166, 58),
    "Bright Red": (192, 30, 36),
}
#: Neutrals sell more, as in a real range.
COLOUR_WEIGHTS: Final = (0.16, 0.16, 0.1, 0.07, 0.1, 0.06, 0.06, 0.05, 0.08, 0.05, 0.06, 0.05)

PATTERNS: Final[tuple[Pattern, ...]] = (
    Pattern("", 1.0, 0.55),
    Pattern("Check", 1.3, 0.22),
    Pattern("Stripe", 1.1, 0.13),
    Pattern("Monogram", 1.45, 0.10),
)
SIZES: Final[tuple[Size, ...]] = (
    Size("Small", 0.56, 0.75, 0.3),
    Size("", 0.74, 1.0, 0.45),
    Size("Large", 0.94, 1.35, 0.25),
)
#: Names the picture cannot show: what makes most titles unique, as in a real catalog.
LINES: Final[tuple[str, ...]] = (
    "Kensington", "Chelsea", "Waterloo", "Sandringham", "Camden", "Harlow", "Lola", "Knight",
    "Olympia", "Frances", "Hackney", "Islington", "Marylebone", "Mayfair", "Soho", "Richmond",
    "Belgravia", "Brompton", "Regent", "Fulham", "Pimlico", "Chiswick", "Holland", "Ashby",
)  # fmt: skip
AUDIENCE_WEIGHTS: Final = {W: 0.52, M: 0.38, K: 0.10}
PRICE_SIGMA: Final = 0.06  # log-normal noise of a product's price around its attribute price
RELISTED_SHARE: Final = 0.08  # styles listed again under a second product code


@dataclass(frozen=True)
class Product:
    index: int
    category: Category
    material: Material
    colour: str
    pattern: Pattern
    size: Size
    line: str
    audience: str
    price: float

    @property
    def title(self) -> str:
        words = [self.size.name, self.line, self.pattern.name, self.material.name]
        return f"{' '.join(w for w in words if w)} {self.category.noun} in {self.colour}"

    @property
    def code(self) -> str:
        return f"{40_000_000 + self.index * 11 + 5:08d}"

    def attributes(self) -> dict[str, str]:
        """The hidden attribute columns (`schema.ATTRIBUTE_COLUMNS`)."""
        return {
            "material": self.material.name,
            "colour": self.colour,
            "pattern": self.pattern.name or "Plain",
            "size": self.size.name or "Medium",
            "line": self.line,
        }


def list_price(category: Category, material: Material, pattern: Pattern, size: Size) -> float:
    """The noise-free price of an attribute combination (what a perfect model can learn)."""
    return category.base_price * material.factor * pattern.factor * size.factor


def draw_product(rng: np.random.Generator, index: int, price_point) -> Product:
    """One product with every attribute drawn from its catalog share."""
    category = CATEGORIES[_pick(rng, [c.weight for c in CATEGORIES])]
    material = MATERIALS[_pick(rng, [m.weight for m in MATERIALS])]
    colour = list(COLOURS)[_pick(rng, COLOUR_WEIGHTS)]
    pattern = PATTERNS[_pick(rng, [p.weight for p in PATTERNS])]
    size = SIZES[_pick(rng, [s.weight for s in SIZES])]
    line = LINES[int(rng.integers(len(LINES)))]
    audience = category.audiences[_pick(rng, [AUDIENCE_WEIGHTS[a] for a in category.audiences])]
    noise = float(np.exp(rng.normal(0.0, PRICE_SIGMA)))
    price = price_point(list_price(category, material, pattern, size) * noise)
    return Product(index, category, material, colour, pattern, size, line, audience, price)


def relist(product: Product, index: int) -> Product:
    """The same style under a new product code (and a new photo): a repeated listing."""
    return Product(
        index,
        product.category,
        product.material,
        product.colour,
        product.pattern,
        product.size,
        product.line,
        product.audience,
        product.price,
    )


def _pick(rng: np.random.Generator, weights) -> int:
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


# ---------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class RenderJob:
    index: int
    category: str
    material: str
    colour: str
    pattern: str
    size: str
    seed: int
    image_size: int


def job_of(product: Product, seed: int, image_size: int) -> RenderJob:
    return RenderJob(
        product.index,
        product.category.code,
        product.material.name,
        product.colour,
        product.pattern.name,
        product.size.name,
        seed,
        image_size,
    )


def render_job(job: RenderJob) -> bytes:
    """Render one product to JPEG bytes (top-level so a process pool can pickle it)."""
    image = render_product(
        next(c for c in CATEGORIES if c.code == job.category),
        next(m for m in MATERIALS if m.name == job.material),
        job.colour,
        next(p for p in PATTERNS if p.name == job.pattern),
        next(s for s in SIZES if s.name == job.size),
        job.image_size,
        job.seed,
        job.index,
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def render_product(
    category: Category,
    material: Material,
    colour: str,
    pattern: Pattern,
    size: Size,
    image_size: int,
    seed: int,
    index: int,
) -> Image.Image:
    """Draw at 2x `image_size` and downscale; jitter (position, scale, background, texture
    noise) comes from (seed, index), so products with the same attributes still differ."""
    rng = np.random.default_rng([seed, index, 0x2EA1])
    canvas = 2 * image_size
    scale = size.scale * rng.uniform(0.96, 1.04)
    slack = max(0.0, (1.0 - scale) / 2 * 0.8)
    cx = 0.5 + rng.uniform(-slack, slack)
    cy = 0.5 + rng.uniform(-slack, slack)
    tint = int(rng.integers(236, 252))
    background = Image.new("RGB", (canvas, canvas), (tint, tint, min(255, tint + 2)))

    def xy(u: float, v: float) -> tuple[float, float]:
        return ((cx + u * scale) * canvas, (cy + v * scale) * canvas)

    mask = Image.new("L", (canvas, canvas), 0)
    extras = SHAPES[category.code](ImageDraw.Draw(mask), xy, scale * canvas)
    rgb = np.asarray(COLOURS[colour], np.float32)
    texture = _texture(material.texture, rgb, canvas, scale, rng)
    if pattern.name:
        _draw_pattern(texture, pattern.name, rgb, xy, scale * canvas)
    if material.texture == "outlined":  # leather: a contrasting stitched edge around the item
        inside = np.asarray(mask) > 0
        edge = inside & ~_eroded(inside, max(2, canvas // 48))
        ImageDraw.Draw(texture).bitmap(
            (0, 0), Image.fromarray(edge).convert("1"), fill=_contrast(rgb, 0.55)
        )
    background.paste(texture, (0, 0), mask)
    if extras is not None:  # hardware drawn over the fabric (buckles, soles, handles)
        extras(ImageDraw.Draw(background))
    return background.reduce(2)


def _eroded(inside: np.ndarray, steps: int) -> np.ndarray:
    """`inside` shrunk by `steps` pixels (4-neighbour erosion; cheaper than a rank filter)."""
    out = inside.copy()
    for _ in range(steps):
        out[1:, :] &= out[:-1, :].copy()
        out[:-1, :] &= out[1:, :].copy()
        out[:, 1:] &= out[:, :-1].copy()
        out[:, :-1] &= out[:, 1:].copy()
    return out


def _contrast(rgb: np.ndarray, amount: float) -> tuple[int, int, int]:
    """A shade of `rgb` that stands out from it: darker for light colours, lighter for dark."""
    light = float(rgb @ np.array([0.299, 0.587, 0.114], np.float32)) > 110
    target = np.zeros(3, np.float32) if light else np.full(3, 255.0, np.float32)
    out = rgb + (target - rgb) * amount
    return tuple(int(v) for v in np.clip(out, 0, 255))


def _texture(
    kind: str, rgb: np.ndarray, canvas: int, scale: float, rng: np.random.Generator
) -> Image.Image:
    """The material's structure in the item's colour; periods are >= 4 px at 64 px."""
    axis = np.arange(canvas, dtype=np.float32) / canvas
    xs, ys = axis[None, :], axis[:, None]  # broadcast to the canvas only where combined
    shade = np.zeros((canvas, canvas), np.float32)  # -1..1, toward the contrast colour
    if kind == "flat":
        shade += _noise(rng, canvas, 2, 0.04)
    elif kind == "blotchy":  # wool: coarse felted blotches
        shade += _noise(rng, canvas, max(2, canvas // 14), 0.28)
    elif kind == "sheen":  # silk: a bright diagonal highlight band
        band = np.exp(-(((xs + ys) - 1.0 + rng.uniform(-0.15, 0.15)) ** 2) / 0.02)
        shade -= 0.75 * band  # negative = toward white whatever the colour
        shade += _noise(rng, canvas, 2, 0.03)
    elif kind == "outlined":  # leather: smooth with a soft glossy spot; the edge is drawn later
        spot = np.exp(-((xs - 0.5 + 0.18 * scale) ** 2 + (ys - 0.5 + 0.18 * scale) ** 2) / 0.006)
        shade -= 0.45 * spot * scale
        shade += _noise(rng, canvas, max(2, canvas // 64), 0.05)
    elif kind == "ribbed":  # cashmere knit: vertical ribs
        period = canvas * scale / 9
        shade += 0.32 * (np.sin(2 * np.pi * xs * canvas / period) > 0.3)
    elif kind == "twill":  # denim: diagonal twill lines
        period = canvas * scale / 10
        shade += 0.35 * (np.sin(2 * np.pi * (xs + ys) * canvas / period) > 0.4)
    elif kind == "quilted":  # nylon puffer: a diamond quilting grid
        period = canvas * scale / 4
        u = (xs + ys) * canvas / period
        v = (xs - ys) * canvas / period
        lines = (np.abs(u - np.round(u)) < 0.07) | (np.abs(v - np.round(v)) < 0.07)
        shade += 0.55 * lines
    elif kind == "flecked":  # tweed: salt-and-pepper flecks
        shade += _noise(rng, canvas, max(2, canvas // 40), 0.45)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    toward = np.asarray(_contrast(rgb, 1.0), np.float32)
    white = np.full(3, 255.0, np.float32)
    pos = np.clip(shade, 0, None)[:, :, None]
    neg = np.clip(-shade, 0, None)[:, :, None]
    pixels = rgb + (toward - rgb) * pos + (white - rgb) * neg
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _noise(rng: np.random.Generator, canvas: int, grain: int, amount: float) -> np.ndarray:
    cells = -(-canvas // grain)
    noise = rng.normal(0.0, amount, size=(cells, cells)).astype(np.float32)
    return np.kron(noise, np.ones((grain, grain), np.float32))[:canvas, :canvas]


def _draw_pattern(texture: Image.Image, name: str, rgb: np.ndarray, xy, span: float) -> None:
    draw = ImageDraw.Draw(texture)
    x0, y0 = xy(-0.5, -0.5)
    if name == "Check":  # a house check: wide dark bands, a thin red and a thin white line
        period = span / 4
        wide, thin = max(3, round(period * 0.18)), max(2, round(period * 0.06))
        for k in range(-1, 6):
            for offset, width, colour in (
                (0.0, wide, (24, 24, 24)),
                (0.45, thin, (200, 24, 30)),
                (0.72, thin, (245, 245, 245)),
            ):
                px, py = x0 + (k + offset) * period, y0 + (k + offset) * period
                draw.line([(px, 0), (px, texture.height)], fill=colour, width=width)
                draw.line([(0, py), (texture.width, py)], fill=colour, width=width)
    elif name == "Stripe":  # broad horizontal stripes in the contrast colour
        period = span / 5
        for k in range(-1, 7):
            top = y0 + k * period
            draw.rectangle(
                [(0, top), (texture.width, top + period * 0.4)], fill=_contrast(rgb, 0.8)
            )
    elif name == "Monogram":  # a grid of rings in the contrast colour
        period = span / 5
        radius = period * 0.22
        width = max(2, round(period * 0.08))
        for i in range(-1, 7):
            for j in range(-1, 7):
                cx, cy = x0 + (i + 0.5) * period, y0 + (j + 0.5) * period
                draw.ellipse(
                    [(cx - radius, cy - radius), (cx + radius, cy + radius)],
                    outline=_contrast(rgb, 0.75),
                    width=width,
                )
    else:
        raise ValueError(f"unknown pattern {name!r}")
