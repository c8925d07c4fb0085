"""`vistune demo`: synthetic catalog -> prepare -> train tiny Phi-3-vision -> evaluate, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    out: Annotated[
        Path | None, typer.Option(help="Folder for every output \\[default: ./vistune-demo].")
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help="Products in the synthetic catalog \\[default: 3040].")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Synthetic catalog: simple (8 categories, 160 titles) or realistic (24 "
            "categories, mostly unique titles; too hard for the tiny model in the demo's "
            "budget) \\[default: simple]."
        ),
    ] = None,
    holdout_combinations: Annotated[
        int | None,
        typer.Option(
            "--holdout-combinations",
            help="Attribute combinations never trained on, all in test \\[default: 8].",
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Training steps \\[default: configs/tiny-demo.yaml's].")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for data, model and training \\[default: 0].")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch \\[default: all cores but one].")
    ] = None,
    train_overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a training setting: key=value (repeatable)."),
    ] = None,
) -> None:
    """Run the whole pipeline on a synthetic catalog in minutes on a CPU, nothing to download.

    Generates a catalog, prepares it, trains the tiny Phi-3-vision from scratch with
    configs/tiny-demo.yaml, evaluates it on held-out products against baselines and a
    blank-image ablation, and writes report.html and a W&B offline run. Ends with the
    metrics on test products whose title (or attribute combination) training never saw.
    """
    from rich.console import Console

    from vistune.demo import DemoConfig, print_summary, run_demo

    console = Console()
    config = DemoConfig.load(
        None,
        None,
        out=out,
        rows=rows,
        preset=preset,
        holdout_combinations=holdout_combinations,
        steps=steps,
        seed=seed,
        threads=threads,
        train_overrides=train_overrides,
    )
    print_summary(run_demo(config, console), console)
