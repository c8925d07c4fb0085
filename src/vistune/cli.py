"""The `vistune` command line: one Typer app, each command a thin call into a module.

Commands live in `vistune.commands.<name>` and import heavy libraries (torch,
transformers) inside the function body, so `vistune --help` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from vistune.commands import demo, evaluate, export, predict, prepare, sample, serve, train
from vistune.errors import VistuneError

app = typer.Typer(
    name="vistune",
    help="Fine-tune vision-language models (Phi-3-vision first) on product image catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a user-caused error as one line on stderr and exit 1; bugs keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VistuneError as exc:
            console = Console(stderr=True, highlight=False, soft_wrap=True)
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(code=1) from exc

    return wrapper


for _name, _module in [
    ("sample", sample),
    ("prepare", prepare),
    ("train", train),
    ("export", export),
    ("evaluate", evaluate),
    ("predict", predict),
    ("serve", serve),
    ("demo", demo),
]:
    app.command(_name)(friendly_errors(_module.command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
