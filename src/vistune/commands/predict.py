"""`vistune predict`: title, category and price for product photos, one line per image."""

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
    images: Annotated[
        list[Path], typer.Argument(help="Image files to answer for.", show_default=False)
    ],
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of text.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write JSON Lines here: one record per image (path, title, category, "
            "full_price, raw, error).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Images per generate call (default 8).")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", help="Answer length (default: the run's, else 64)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML with PredictConfig keys.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: key=value.")
    ] = None,
) -> None:
    """Answer for each image: title, category, full price and the raw answer.

    A missing, too large or non-image file gets an error line; the others are still answered.
    Exit code 1 when any file could not be used (unparsed answers are shown, not failures).
    """
    import json
    import sys

    from vistune.evaluation.predict import PredictConfig, run_predict

    cfg = PredictConfig.load(
        config,
        overrides,
        model=model,
        images=[str(p) for p in images],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        json_lines=json_lines or None,
        out=out,
    )
    results = run_predict(cfg)
    if cfg.out is not None:
        from vistune.evaluation.predict import write_json_lines

        write_json_lines(results, cfg.out)
    for result in results:
        line = (
            json.dumps(result.as_dict(), ensure_ascii=False) if cfg.json_lines else result.as_line()
        )
        print(line, flush=True)
    if cfg.out is not None:
        print(f"wrote {len(results)} records to {cfg.out}", file=sys.stderr)
    failed = sum(r.file_failed for r in results)
    if failed:
        print(f"{failed} of {len(results)} files could not be used", file=sys.stderr)
        raise typer.Exit(code=1)
