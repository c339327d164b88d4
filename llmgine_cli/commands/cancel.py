"""`llmgine command cancel ID...` ↔ POST /api/sessions/{id}/commands/{command_id}/cancel.

The ids are taken as `command wait` takes them (waiting.py): full ids of any session, or the
short id or prefix of an unfinished command as `llmgine ps` shows it; with -S, any of that
session's. So `llmgine ps -q | xargs -r llmgine command cancel` stops the queue, as `docker
kill $(docker ps -q)` does. The session of a command named without -S is asked of the daemon
(a wait that does not wait: POST /api/commands/wait with timeout 0, any session the caller
may see).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer

from llmgine_cli.commands import several, waiting
from llmgine_cli.commands.args import text_view
from llmgine_cli.options import Output, Quiet, state

CommandIds = Annotated[
    list[str],
    typer.Argument(
        metavar="ID...",
        help="The commands: full ids (of any session you may see), or an unfinished one's short id or prefix "
        "(as `llmgine ps` shows them); with -S, that session's by its short id or prefix.",
    ),
]


def cancel(
    ctx: typer.Context,
    command_ids: CommandIds,
    session: waiting.WaitSession = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Cancel queued, blocked or executing commands (exit 6 if one had already finished).

    Several IDs are cancelled in turn, as `docker kill` stops containers: one that fails is an
    error line and the exit code of the first failure, and the others are still cancelled.

    Examples:

      EID=$(llmgine engine create DummyEngine -S demo --reuse -q)

      ID=$(llmgine engine exec "$EID" hi -p delay_ms:=5000 --no-wait -q)

      llmgine command cancel "$ID"

      llmgine ps -q | xargs -r llmgine command cancel -q
    """
    from llmgine_cli.commands.commands import COMMAND_VIEW, LIST_VIEW

    app_ctx = state(ctx)
    client = app_ctx.client()

    def cancel_one(given: str) -> Any:
        return text_view(msgspec.to_builtins(client.cancel_command(*waiting.locate(app_ctx, session, given))))

    several.show_each(app_ctx, command_ids, cancel_one, COMMAND_VIEW, "commands", LIST_VIEW, output, quiet)
