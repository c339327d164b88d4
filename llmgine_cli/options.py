"""Options every command shares (the output contract), and the way to reach the app context."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from llmgine_cli.context import AppContext, Environment


class OutputFormat(StrEnum):
    # A str Enum so a value compares equal to its name ("json") wherever it is passed on.
    table = "table"
    plain = "plain"
    json = "json"
    jsonl = "jsonl"


Output = Annotated[
    OutputFormat | None,
    typer.Option(
        "-o",
        "--output",
        metavar="FORMAT",
        case_sensitive=False,
        help="table, plain, json or jsonl (default: a table on a terminal, plain text when piped)",
        show_default=False,
    ),
]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print only ids, one per line.")]


def state(ctx: typer.Context) -> AppContext:
    """The root callback's AppContext (built here when a test invokes a sub-app directly)."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext(Environment.from_sys())
    return root.obj
