"""`llmgine batch ...`: batches by id, across sessions (`command batch` submits one)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import CommandCreate

from llmgine_cli.commands import waiting
from llmgine_cli.commands.args import read_text
from llmgine_cli.inputs import loads
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
    1 if one did not, 7 on --timeout.

    Examples:

      llmgine command batch -S demo -f jobs.jsonl --no-wait -o json > batch.json

      llmgine batch wait "$(jq -r .batch_id batch.json)" --timeout 60
    """
    code = waiting.wait_and_report(
        state(ctx), [], batch_id=batch_id, any_=any_, status=status, timeout=timeout, output=output, quiet=quiet
    )
    if code:
        raise typer.Exit(code)


def read_batch_file(path: str) -> list[dict[str, Any]]:
    """JSON Lines or a JSON array, one {command_type, parameters, metadata} each."""
    text = read_text(path, "--file")  # (not UTF-8 was "internal error: UnicodeDecodeError", exit 1)
    source = "stdin" if path == "-" else path
    if text.lstrip().startswith("["):
        try:
            items = loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"{source} is not a JSON array: {exc}", param_hint="--file") from None
        where = [f"item {i}" for i in range(len(items))]
    else:
        items, where = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(loads(line))
            except ValueError as exc:  # its line in the file, the column in the line
                issue = f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else exc
                raise typer.BadParameter(f"{source} line {number} is not JSON: {issue}", param_hint="--file") from None
            where.append(f"line {number}")
    for item, place in zip(items, where, strict=True):
        if not isinstance(item, dict):
            raise typer.BadParameter(f"{place} is not a JSON object", param_hint="--file")
        try:  # checked here, so the error names the line (the daemon's 422 said commands[1], exit 1)
            msgspec.convert(item, CommandCreate)
        except msgspec.ValidationError as exc:
            from llmgine_daemon.protocol.grammar import validation_issue

            field, issue = validation_issue(str(exc))
            raise typer.BadParameter(f"{place}: {field}: {issue}", param_hint="--file") from None
    if not items:
        raise typer.BadParameter("no commands in the file", param_hint="--file")
    return items
