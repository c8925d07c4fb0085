"""`vistune export`: a run's model as a PEFT adapter folder or merged full weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vistune.training.export import DEFAULT_MAX_SHARD_SIZE


def command(
    run_dir: Annotated[Path, typer.Argument(help="Run dir of vistune train (or its final/).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    merge: Annotated[
        bool,
        typer.Option("--merge", help="Merge LoRA into the base: full safetensors weights."),
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            "--for",
            help="Merged layout: 'official' = drop-in replacement of the base model folder "
            "(its config.json, processor/tokenizer/code files; for vLLM/SGLang), 'vistune' = "
            "self-contained vistune layout (no remote code).",
        ),
    ] = "official",
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights dtype: float32, bfloat16, float16 \\[default: the base model's for "
            "official, float32 for vistune]."
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            help="Base model folder to copy config/processor/code files from \\[default: the "
            "folder the run started from].",
            show_default=False,
        ),
    ] = None,
    max_shard_size: Annotated[
        str, typer.Option(help="Largest safetensors shard of merged weights.")
    ] = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    """Write the trained model: adapter + processor files, or (--merge) full weights."""
    from rich.console import Console
    from rich.markup import escape

    from vistune.training.export import export_run

    result = export_run(
        run_dir,
        out,
        merge=merge,
        target=target,  # type: ignore[arg-type]  (checked by export_run)
        dtype=dtype,
        base=base,
        max_shard_size=max_shard_size,
    )
    console = Console(highlight=False)
    layout = f" ({result.target} layout)" if result.target else ""
    console.print(f"exported {result.kind}{layout} to {escape(str(result.out_dir))}")
    for line in result.dropped_auto_map:
        console.print(f"  dropped auto_map entry with no code file: {escape(line)}")
    for note in result.notes:
        console.print(f"  - {escape(note)}")
