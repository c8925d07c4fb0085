"""Build docs/sample-grid.png: realistic sample products as the demo's model sees them.

    PYTHONPATH=src python docs/make_sample_grid.py [CATALOG_DIR] [OUT_PNG]

Each picture is downscaled to the tiny demo model's 64 px input (then enlarged 2x without
smoothing, so what is shown is exactly what the model gets) with its category, material,
colour, pattern and size printed under it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from vistune.data.sample import generate_catalog

MODEL_PX = 64
ZOOM = 2
COLS = 8
ROWS = 6


def build(catalog_dir: Path, out: Path) -> None:
    frame = pd.read_parquet(catalog_dir / "catalog.parquet").drop_duplicates("product_code")
    # One product per category first, then the rest, so every silhouette shows up.
    picked = frame.groupby("category3_code", sort=True).head(1)
    rest = frame.drop(picked.index).head(COLS * ROWS - len(picked))
    picked = pd.concat([picked, rest]).head(COLS * ROWS)
    cell, text_h = MODEL_PX * ZOOM, 40
    grid = Image.new("RGB", (COLS * cell, ROWS * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for k, row in enumerate(picked.itertuples()):
        image = Image.open(catalog_dir / row.image).convert("RGB")
        small = image.resize((MODEL_PX, MODEL_PX), Image.Resampling.BICUBIC)
        x, y = (k % COLS) * cell, (k // COLS) * (cell + text_h)
        grid.paste(small.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        lines = [
            row.category3_code.title(),
            f"{row.material} {row.pattern}",
            f"{row.colour}, {row.size}",
        ]
        for i, line in enumerate(lines):
            draw.text((x + 2, y + cell + 1 + 12 * i), line[:22], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)  # a small PNG


if __name__ == "__main__":
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/sample-grid.png")
    if len(sys.argv) > 1:
        build(Path(sys.argv[1]), out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            generate_catalog(tmp, rows=200, seed=0, image_size=128)
            build(Path(tmp), out)
