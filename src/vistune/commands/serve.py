"""`vistune serve`: an HTTP prediction endpoint with an upload page (the `serve` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    model: Annotated[str, typer.Argument(help="Run dir, exported folder, hub id or 'tiny'.")],
    host: Annotated[
        str | None, typer.Option(help="Interface to bind \\[default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port \\[default: 8000].")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="VISTUNE_SERVE_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' (16+ characters) on /v1/* endpoints, "
            "the /healthz details and /docs.",
            show_default=False,
        ),
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most requests per forward pass \\[default: 8].")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Longest wait for a batch to fill \\[default: 10].")
    ] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest accepted upload \\[default: 10].")
    ] = None,
    allow_image_urls: Annotated[
        bool,
        typer.Option(
            "--allow-image-urls",
            help="Let /v1/chat/completions fetch http(s) image URLs (public addresses only).",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with serve settings.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value.")
    ] = None,
) -> None:
    """Serve MODEL over HTTP: POST /v1/predict (multipart image), POST /v1/chat/completions
    and GET /v1/models (OpenAI API), GET /healthz, GET / (page)."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from vistune.errors import VistuneError

        raise VistuneError(
            f"vistune serve needs the serve extra ({exc.name} is missing): "
            'pip install "vistune[serve]"'
        ) from exc

    from vistune.serve.config import ServeConfig
    from vistune.serve.server import run_server

    run_server(
        ServeConfig.load(
            config,
            overrides,
            model=model,
            host=host,
            port=port,
            token=token,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_upload_mb=max_upload_mb,
            allow_image_urls=allow_image_urls or None,
        )
    )
