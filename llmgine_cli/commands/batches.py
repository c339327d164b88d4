"""`llmgine batch ...`: batches by id, across sessions (`command batch` submits one)."""

from __future__ import annotations

from typing import Annotated

import typer

from llmgine_cli.commands import waiting
from llmgine_cli.options import Output, Quiet, state

app = typer.Typer(help="Wait for batches of commands (submit one with `llmgine command batch`).", no_args_is_help=True)


@app.callback()
def batch() -> None:
    """Batches of commands, by id, in any session you may see."""


@app.command("wait")
def wait(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="BATCH_ID", help="The batch's full id.")],
    any_: waiting.Any_ = False,
    status: waiting.Status = None,
    timeout: waiting.WaitTimeout = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Wait until every command of the batch finished and print them: exit 0 if all completed,
    1 if one did not, 7 on --timeout."""
    code = waiting.wait_and_report(
        state(ctx), [], batch_id=batch_id, any_=any_, status=status, timeout=timeout, output=output, quiet=quiet
    )
    if code:
        raise typer.Exit(code)
