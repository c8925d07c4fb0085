"""`vistune sample`: write a synthetic catalog (catalog.parquet + images/) to try a pipeline on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write.")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="realistic: 24 categories, 8 materials, 12 colours, mostly unique titles; "
            "simple: 8 categories, 5 materials, 160 titles \\[default: realistic]."
        ),
    ] = None,
    rows: Annotated[int | None, typer.Option(help="Catalog rows (default 3040).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Image side in px (default 128).")
    ] = None,
    faults: Annotated[
        float | None,
        typer.Option(help="Share of rows with injected faults, e.g. 0.05 (default 0)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with these options.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: key=value.")
    ] = None,
) -> None:
    """Write a synthetic product catalog whose answers are visible in the images."""
    import time

    from rich.console import Console

    from vistune.data.sample import SampleConfig, generate_catalog

    cfg = SampleConfig.load(
        config,
        overrides,
        out=out,
        preset=preset,
        rows=rows,
        seed=seed,
        image_size=image_size,
        faults=faults,
    )
    started = time.perf_counter()
    if cfg.out.exists() and not cfg.out.is_dir():
        from vistune.errors import DataError

        raise DataError(f"--out {cfg.out}: exists and is not a folder; choose a folder")
    frame = generate_catalog(
        cfg.out,
        rows=cfg.rows,
        seed=cfg.seed,
        image_size=cfg.image_size,
        faults=cfg.faults,
        preset=cfg.preset,
    )
    cfg.save(cfg.out / "sample.yaml")
    products = frame["product_code"].nunique()
    Console(highlight=False, soft_wrap=True).print(
        f"wrote {len(frame)} rows ({cfg.preset} preset, {products} products, "
        f"{frame['category3_code'].nunique()} categories) to {cfg.out / 'catalog.parquet'} "
        f"in {time.perf_counter() - started:.1f} s"
    )
