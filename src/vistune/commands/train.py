"""`vistune train`: fine-tune a vision-language model on a prepared dataset dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    data: Annotated[
        Path | None, typer.Option("--data", help="Prepared dataset dir (vistune prepare).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model folder, hub id, or 'tiny' (built offline)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Run dir: checkpoints, final/, wandb/.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML recipe (e.g. configs/*.yaml).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.")
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="lora (default) | qlora | full.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: key=value (e.g. lora.rank=32)."),
    ] = None,
    report_to: Annotated[
        list[str] | None,
        typer.Option("--report-to", help="wandb | mlflow | tensorboard | none (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in --output.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Train even when the memory estimate says it will not fit the GPU."
        ),
    ] = False,
) -> None:
    """Train with LoRA, QLoRA or full fine-tuning; saves RUN_DIR/config.yaml and RUN_DIR/final/."""
    from rich.console import Console

    from vistune.training import TrainConfig, run_training

    if resume and config is None and output is not None and (output / "config.yaml").is_file():
        config = output / "config.yaml"  # resume repeats the saved run unless told otherwise
    trackers = None
    if report_to:
        trackers = [t.strip() for item in report_to for t in item.split(",") if t.strip()]
    cfg = TrainConfig.load(
        config,
        overrides,
        data=str(data) if data else None,
        model=model,
        output=str(output) if output else None,
        max_steps=max_steps,
        method=method,
        report_to=trackers,
    )
    try:
        result = run_training(cfg, resume=resume, force=force)
    except KeyboardInterrupt:
        Console(stderr=True, highlight=False).print(
            f"interrupted: checkpoints in {cfg.output} are kept; continue with "
            f"vistune train --output {cfg.output} --resume"
        )
        raise typer.Exit(code=130) from None
    Console(highlight=False).print(
        f"trained {result.global_step} steps (train loss {result.train_loss:.4f}); "
        f"model in {result.final_dir}"
    )
