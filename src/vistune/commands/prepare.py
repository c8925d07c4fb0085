"""`vistune prepare`: a catalog source -> validated, deduplicated, leak-free dataset dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="Hub dataset id, CSV/Parquet/JSONL file, `vistune sample` folder or image folder."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Dataset folder to write.")] = None,
    image_column: Annotated[
        str | None, typer.Option("--image-column", help="Column with image URLs/paths.")
    ] = None,
    title_column: Annotated[
        str | None, typer.Option("--title-column", help="Column with the product name.")
    ] = None,
    category_column: Annotated[
        str | None, typer.Option("--category-column", help="Column with the category.")
    ] = None,
    price_column: Annotated[
        str | None, typer.Option("--price-column", help="Column with the full price.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (default 0).")] = None,
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by",
            help="Also keep rows sharing this column's value in one split (repeatable), e.g. "
            "title; product_code and the image are always keys.",
        ),
    ] = None,
    holdout_combinations: Annotated[
        int | None,
        typer.Option(
            "--holdout-combinations",
            help="Hold N attribute combinations (combination_columns: the sample's category, "
            "material, pattern, size) out of train and validation, all into test \\[default: 0].",
        ),
    ] = None,
    allow_private_hosts: Annotated[
        bool | None,
        typer.Option(
            "--allow-private-hosts",
            help="Also fetch from private, loopback and link-local addresses.",
        ),
    ] = None,
    allow_outside_paths: Annotated[
        bool | None,
        typer.Option(
            "--allow-outside-paths",
            help="Also read local image paths outside the source folder (absolute, ../).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with prepare options.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. splits.validation=0.2."),
    ] = None,
) -> None:
    """Download, validate and split a catalog into train/validation/test Parquet + images."""
    from rich.console import Console

    from vistune.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig.load(
        config,
        overrides,
        source=source,
        out=out,
        image_column=image_column,
        title_column=title_column,
        category_column=category_column,
        price_column=price_column,
        seed=seed,
        group_by=group_by or None,
        holdout_combinations=holdout_combinations,
        allow_private_hosts=allow_private_hosts or None,
        allow_outside_paths=allow_outside_paths or None,
    )
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(
        f"prepare {cfg.source} -> {cfg.out}: splits {cfg.splits.train:g}/"
        f"{cfg.splits.validation:g}/{cfg.splits.test:g} (seed {cfg.seed}), images capped at "
        f"{cfg.max_image_side} px, {cfg.download.concurrency} parallel downloads"
        + (", private hosts allowed" if cfg.allow_private_hosts else "")
        + (f", grouped also by {', '.join(cfg.group_by)}" if cfg.group_by else "")
        + (
            f", {cfg.holdout_combinations} combinations of {', '.join(cfg.combination_columns)} "
            "held out into test"
            if cfg.holdout_combinations
            else ""
        )
    )
    manifest = prepare_dataset(cfg, show_progress=True)
    Console(highlight=False, soft_wrap=True).print(f"{manifest.summary()} -> {cfg.out}")
