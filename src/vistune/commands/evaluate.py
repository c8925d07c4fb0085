"""`vistune evaluate`: score a model on a held-out split against baselines and a blind model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    model: Annotated[
        str,
        typer.Argument(
            help="Run dir, exported/model folder, adapter folder, hub id, or 'tiny'.",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset dir; default: the run's dataset."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split to score (default test).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where metrics.json, predictions and report go.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Score a seeded random subset of N rows.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Generation batch size (default 8).")
    ] = None,
    no_ablation: Annotated[
        bool, typer.Option("--no-ablation", help="Skip the blank-image ablation (halves the time).")
    ] = False,
    compare_base: Annotated[
        bool,
        typer.Option(
            "--compare-base", help="Also score the run's base model (before fine-tuning)."
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML with EvaluateConfig keys.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: key=value.")
    ] = None,
) -> None:
    """Generate answers for a split, score them against baselines and a blind model, report."""
    from vistune.evaluation import EvaluateConfig, run_evaluation

    cfg = EvaluateConfig.load(
        config,
        overrides,
        model=model,
        data=str(data) if data else None,
        split=split,
        out=str(out) if out else None,
        limit=limit,
        batch_size=batch_size,
        ablation=False if no_ablation else None,
        compare_base=compare_base or None,
    )
    run_evaluation(cfg)
