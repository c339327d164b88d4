"""A question before what cannot be undone (`session delete --purge`, `secret delete`), as
`gh repo delete` and `docker system prune` ask: only when a person is there to answer (stdin
and stderr are terminals). A script (stdin not a terminal) is never asked, so it runs as
before; `--yes` skips the question on a terminal too."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmgine_cli.context import AppContext
from llmgine_cli.status import ExitStatus

Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (asked only on a terminal; scripts never are)."),
]


def confirm(app_ctx: AppContext, question: str, yes: bool) -> None:
    """Ask ``question`` on a terminal and go on only on y/yes; otherwise exit 1, nothing done."""
    env = app_ctx.env
    if yes or not (sys.stdin.isatty() and env.stderr_isatty):
        return
    env.stderr.write(f"{question} This cannot be undone. [y/N] ")
    env.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        env.err("")  # the shell's next prompt on a line of its own
        raise typer.Exit(ExitStatus.INTERRUPTED) from None
    if not answer.endswith("\n"):
        env.err("")  # Ctrl-D left the cursor after the question
    if answer.strip().lower() not in ("y", "yes"):
        env.err("error: not confirmed: nothing was deleted (--yes skips the question)")
        raise typer.Exit(ExitStatus.ERROR)
