"""Silhouettes of the realistic sample's 24 categories, one function per `category3_code`.

Each draws the item's mask (255 = the item, 0 = holes) in unit coordinates centred on the
item (`xy(u, v)`, u and v in -0.5..0.5 of the item's span) and may return a function that
draws hardware over the finished picture (a buckle, a white sole, a metal handle), which
keeps its colour whatever the item is made of. Shapes differ in outline, not only in
detail, so the category survives downscaling to 64 px.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from PIL import ImageDraw

Extras = Callable[[ImageDraw.ImageDraw], None] | None
METAL: Final = (200, 170, 60)
SOLE: Final = (250, 250, 250)


def _poly(draw: ImageDraw.ImageDraw, xy, points, fill: int = 255) -> None:
    draw.polygon([xy(u, v) for u, v in points], fill=fill)


def _w(span: float, share: float, least: int = 2) -> int:
    return max(least, round(span * share))


def tshirt(draw, xy, span) -> Extras:
    outline = [(-0.18, -0.4), (0.18, -0.4), (0.5, -0.2), (0.4, 0.02), (0.28, -0.06),
               (0.28, 0.42), (-0.28, 0.42), (-0.28, -0.06), (-0.4, 0.02), (-0.5, -0.2)]  # fmt: skip
    _poly(draw, xy, outline)
    draw.ellipse([xy(-0.1, -0.48), xy(0.1, -0.32)], fill=0)
    return None


def shirt(draw, xy, span) -> Extras:
    """Laid out flat with the long sleeves spread straight out, a pointed collar and buttons."""
    outline = [(-0.14, -0.42), (0.14, -0.42), (0.5, -0.36), (0.5, -0.22), (0.24, -0.2),
               (0.24, 0.48), (-0.24, 0.48), (-0.24, -0.2), (-0.5, -0.22),
               (-0.5, -0.36)]  # fmt: skip
    _poly(draw, xy, outline)
    _poly(draw, xy, [(-0.09, -0.42), (0.09, -0.42), (0.0, -0.28)], fill=0)

    def buttons(d: ImageDraw.ImageDraw) -> None:
        for k in range(4):
            x, y = xy(0.0, -0.16 + k * 0.16)
            r = span * 0.022
            d.ellipse([(x - r, y - r), (x + r, y + r)], fill=(245, 245, 245))

    return buttons


def sweater(draw, xy, span) -> Extras:
    """Long sleeves with wide cuffs, a round neck and a ribbed hem band."""
    _poly(draw, xy, [(-0.2, -0.42), (0.2, -0.42), (0.42, -0.3), (0.5, 0.3), (0.36, 0.32),
                     (0.3, -0.05), (0.3, 0.34), (-0.3, 0.34), (-0.3, -0.05), (-0.36, 0.32),
                     (-0.5, 0.3), (-0.42, -0.3)])  # fmt: skip
    draw.rectangle([xy(-0.32, 0.34), xy(0.32, 0.44)], fill=255)
    draw.ellipse([xy(-0.12, -0.5), xy(0.12, -0.32)], fill=0)
    return None


def trench(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.2, -0.5), (0.2, -0.5), (0.38, -0.4), (0.48, 0.2), (0.36, 0.22),
                     (0.3, -0.12), (0.36, 0.5), (-0.36, 0.5), (-0.3, -0.12), (-0.36, 0.22),
                     (-0.48, 0.2), (-0.38, -0.4)])  # fmt: skip
    _poly(draw, xy, [(-0.08, -0.5), (0.08, -0.5), (0.0, -0.3)], fill=0)

    def belt(d: ImageDraw.ImageDraw) -> None:
        d.line([xy(-0.33, 0.05), xy(0.33, 0.05)], fill=(40, 30, 25), width=_w(span, 0.03))

    return belt


def jacket(draw, xy, span) -> Extras:
    """Short and boxy, with a zip down the middle."""
    _poly(draw, xy, [(-0.2, -0.36), (0.2, -0.36), (0.44, -0.26), (0.5, 0.28), (0.38, 0.3),
                     (0.32, 0.0), (0.32, 0.3), (-0.32, 0.3), (-0.32, 0.0), (-0.38, 0.3),
                     (-0.5, 0.28), (-0.44, -0.26)])  # fmt: skip

    def zip_line(d: ImageDraw.ImageDraw) -> None:
        d.line([xy(0.0, -0.36), xy(0.0, 0.3)], fill=(190, 190, 195), width=_w(span, 0.02))

    return zip_line


def dress(draw, xy, span) -> Extras:
    outline = [(-0.14, -0.5), (-0.06, -0.5), (-0.04, -0.38), (0.04, -0.38), (0.06, -0.5),
               (0.14, -0.5), (0.16, -0.1), (0.42, 0.5), (-0.42, 0.5), (-0.16, -0.1)]  # fmt: skip
    _poly(draw, xy, outline)
    return None


def skirt(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.22, -0.3), (0.22, -0.3), (0.46, 0.3), (-0.46, 0.3)])
    draw.rectangle([xy(-0.22, -0.36), xy(0.22, -0.28)], fill=255)
    return None


def trousers(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.28, -0.5), (0.28, -0.5), (0.32, 0.5), (0.06, 0.5), (0.0, -0.12),
                     (-0.06, 0.5), (-0.32, 0.5)])  # fmt: skip
    return None


def shorts(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.34, -0.24), (0.34, -0.24), (0.46, 0.22), (0.06, 0.26), (0.0, 0.02),
                     (-0.06, 0.26), (-0.46, 0.22)])  # fmt: skip
    return None


def tote(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.4, -0.1), (0.4, -0.1), (0.5, 0.45), (-0.5, 0.45)])
    draw.arc([xy(-0.25, -0.5), xy(0.25, 0.1)], 180, 360, fill=255, width=_w(span, 0.06))
    return None


def crossbody(draw, xy, span) -> Extras:
    """A small rounded body hanging from a long thin strap."""
    draw.rounded_rectangle([xy(-0.3, 0.05), xy(0.3, 0.45)], radius=span * 0.08, fill=255)

    def strap(d: ImageDraw.ImageDraw) -> None:
        d.line([xy(-0.26, 0.08), xy(0.0, -0.5), xy(0.26, 0.08)], fill=METAL, width=_w(span, 0.02))

    return strap


def backpack(draw, xy, span) -> Extras:
    draw.rounded_rectangle([xy(-0.32, -0.38), xy(0.32, 0.48)], radius=span * 0.14, fill=255)
    draw.arc([xy(-0.12, -0.5), xy(0.12, -0.3)], 180, 360, fill=255, width=_w(span, 0.035))
    draw.rounded_rectangle([xy(-0.2, 0.12), xy(0.2, 0.4)], radius=span * 0.05, fill=0)
    draw.rounded_rectangle([xy(-0.17, 0.15), xy(0.17, 0.37)], radius=span * 0.04, fill=255)
    return None


def clutch(draw, xy, span) -> Extras:
    """A flat envelope: a wide rectangle with a triangular flap cut out."""
    draw.rectangle([xy(-0.5, -0.2), xy(0.5, 0.2)], fill=255)
    draw.line([xy(-0.5, -0.2), xy(0.0, 0.06), xy(0.5, -0.2)], fill=0, width=_w(span, 0.025))
    return None


def sneakers(draw, xy, span) -> Extras:
    _poly(draw, xy, [(-0.5, 0.05), (-0.45, -0.18), (-0.12, -0.22), (0.02, -0.06), (0.38, 0.0),
                     (0.5, 0.14), (0.5, 0.26), (-0.5, 0.26)])  # fmt: skip

    def sole(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([xy(-0.5, 0.22), xy(0.5, 0.32)], fill=SOLE)

    return sole


def boots(draw, xy, span) -> Extras:
    """A tall shaft and a foot: an L."""
    _poly(draw, xy, [(-0.4, -0.5), (-0.02, -0.5), (0.0, 0.06), (0.42, 0.16), (0.5, 0.4),
                     (-0.4, 0.4)])  # fmt: skip

    def heel(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([xy(-0.4, 0.4), xy(-0.18, 0.5)], fill=(30, 30, 30))

    return heel


def loafers(draw, xy, span) -> Extras:
    """A low shoe with a metal bit across the vamp."""
    _poly(draw, xy, [(-0.5, 0.0), (-0.3, -0.12), (0.1, -0.1), (0.42, 0.02), (0.5, 0.16),
                     (-0.5, 0.16)])  # fmt: skip

    def bit(d: ImageDraw.ImageDraw) -> None:
        d.line([xy(0.08, -0.06), xy(0.28, -0.02)], fill=METAL, width=_w(span, 0.035))

    return bit


def scarf(draw, xy, span) -> Extras:
    draw.rectangle([xy(-0.16, -0.4), xy(0.16, 0.4)], fill=255)
    for k in range(7):
        u = -0.14 + k * 0.28 / 6
        draw.line([xy(u, -0.5), xy(u, -0.4)], fill=255, width=_w(span, 0.015, 1))
        draw.line([xy(u, 0.4), xy(u, 0.5)], fill=255, width=_w(span, 0.015, 1))
    return None


def cap(draw, xy, span) -> Extras:
    draw.chord([xy(-0.38, -0.35), xy(0.3, 0.45)], 180, 360, fill=255)
    _poly(draw, xy, [(0.2, 0.0), (0.5, 0.06), (0.5, 0.12), (0.2, 0.1)])
    return None


def bucket_hat(draw, xy, span) -> Extras:
    """A flat-topped crown on a wide sloping brim."""
    _poly(draw, xy, [(-0.24, -0.3), (0.24, -0.3), (0.3, 0.04), (-0.3, 0.04)])
    _poly(draw, xy, [(-0.3, 0.02), (0.3, 0.02), (0.5, 0.2), (-0.5, 0.2)])
    return None


def belt(draw, xy, span) -> Extras:
    draw.rectangle([xy(-0.5, -0.06), xy(0.5, 0.06)], fill=255)

    def buckle(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([xy(-0.36, -0.1), xy(-0.2, 0.1)], outline=METAL, width=_w(span, 0.025))

    return buckle


def gloves(draw, xy, span) -> Extras:
    """A mitten-like hand: palm, thumb and a cuff."""
    draw.rounded_rectangle([xy(-0.2, -0.42), xy(0.2, 0.22)], radius=span * 0.18, fill=255)
    draw.ellipse([xy(-0.44, -0.14), xy(-0.14, 0.06)], fill=255)
    draw.rectangle([xy(-0.22, 0.18), xy(0.22, 0.46)], fill=255)
    draw.line([xy(-0.22, 0.22), xy(0.22, 0.22)], fill=0, width=_w(span, 0.02))
    return None


def umbrella(draw, xy, span) -> Extras:
    """A canopy with scalloped rim over a long shaft ending in a hook handle."""
    draw.pieslice([xy(-0.5, -0.45), xy(0.5, 0.25)], 180, 360, fill=255)
    for k in range(4):
        u = -0.375 + k * 0.25
        draw.ellipse([xy(u - 0.125, -0.16), xy(u + 0.125, -0.04)], fill=0)

    def handle(d: ImageDraw.ImageDraw) -> None:
        width = _w(span, 0.025)
        d.line([xy(0.0, -0.1), xy(0.0, 0.42)], fill=(40, 40, 40), width=width)
        d.arc([xy(-0.12, 0.34), xy(0.0, 0.5)], 0, 180, fill=(40, 40, 40), width=width)

    return handle


def wallet(draw, xy, span) -> Extras:
    draw.rectangle([xy(-0.34, -0.22), xy(0.34, 0.22)], fill=255)
    draw.line([xy(-0.34, -0.02), xy(0.34, -0.02)], fill=0, width=_w(span, 0.02, 1))
    return None


def card_holder(draw, xy, span) -> Extras:
    """A small upright card sleeve with two slots."""
    draw.rectangle([xy(-0.2, -0.3), xy(0.2, 0.3)], fill=255)
    for v in (-0.16, -0.02):
        draw.line([xy(-0.2, v), xy(0.2, v)], fill=0, width=_w(span, 0.02, 1))
    return None


SHAPES: Final[dict[str, Callable[..., Extras]]] = {
    "T-SHIRTS": tshirt,
    "SHIRTS": shirt,
    "KNITWEAR": sweater,
    "TRENCH COATS": trench,
    "JACKETS": jacket,
    "DRESSES": dress,
    "SKIRTS": skirt,
    "TROUSERS": trousers,
    "SHORTS": shorts,
    "TOTE BAGS": tote,
    "CROSSBODY BAGS": crossbody,
    "BACKPACKS": backpack,
    "CLUTCHES": clutch,
    "SNEAKERS": sneakers,
    "BOOTS": boots,
    "LOAFERS": loafers,
    "SCARVES": scarf,
    "CAPS": cap,
    "BUCKET HATS": bucket_hat,
    "BELTS": belt,
    "GLOVES": gloves,
    "UMBRELLAS": umbrella,
    "WALLETS": wallet,
    "CARD HOLDERS": card_holder,
}
