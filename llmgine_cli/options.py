"""Options every command shares (the output contract), and the way to reach the app context."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmgine_cli.context import AppContext, Environment
from llmgine_cli.render import FORMATS
from llmgine_cli.template import FORMAT_HELP, parse_format


def _complete_format(incomplete: str) -> list[str]:
    return [name for name in FORMATS if name.startswith(incomplete.lower())]


def output_option(default: str) -> Any:
    """-o/--output/--format: a format name, or a docker-style template (llmgine_cli/template.py);
    ``default`` says what a command prints without it."""
    return Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            "--format",
            metavar="FORMAT",
            parser=parse_format,
            autocompletion=_complete_format,
            help=f"{FORMAT_HELP} (default: {default})",
            show_default=False,
        ),
    ]


Output = output_option("a table on a terminal, plain text when piped")
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print only ids, one per line.")]


def state(ctx: typer.Context) -> AppContext:
    """The root callback's AppContext (built here when a test invokes a sub-app directly)."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext(Environment.from_sys())
    return root.obj
