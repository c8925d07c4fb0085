"""`vistune export`: a run's model as a PEFT adapter folder or merged full weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run_dir: Annotated[Path, typer.Argument(help="Run dir of vistune train (or its final/).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    merge: Annotated[
        bool,
        typer.Option("--merge", help="Merge LoRA into the base: full safetensors weights."),
    ] = False,
) -> None:
    """Write the trained model: adapter + processor files, or (--merge) full weights."""
    from rich.console import Console

    from vistune.training.export import export_run

    result = export_run(run_dir, out, merge=merge)
    Console(highlight=False).print(f"exported {result.kind} to {result.out_dir}")
