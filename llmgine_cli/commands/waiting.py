"""`llmgine command wait ID...` and `llmgine batch wait BATCH_ID` ↔ POST /api/commands/wait.

The daemon holds each request until the commands reach the state asked for (api/lifecycle.py),
so this is a few long requests (one per ``LONG_POLL_S``), never a poll loop.

Exit codes (status.py): 0 when every command (``--any``: one that ended the wait) is
``completed`` (or, with ``--status``, in one of the statuses named); 1 when one finished
otherwise; 7 when ``--timeout`` passed first; 130 on Ctrl-C (the commands go on).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import COMMAND_STATUSES, UNFINISHED_STATUSES, CommandWaitResult
from llmgine_daemon.protocol import TERMINAL_STATUSES as TERMINAL
from llmgine_daemon.protocol.lifecycle import MAX_WAIT_IDS

from llmgine_cli.commands.args import LONG_POLL_S, choices, session_option, summary
from llmgine_cli.context import AppContext
from llmgine_cli.render import View, render, resolve_format
from llmgine_cli.status import ExitStatus

WAITABLE = COMMAND_STATUSES

WAIT_VIEW = View(
    columns="ID=command_id, SESSION=session_id, TYPE=command_type, STATUS=status, TOOK=duration_ms, RESULT=summary",
    items="commands",
    id_field="command_id",
)

Any_ = Annotated[
    bool, typer.Option("--any", help="Return as soon as one of them reached the state (default: all of them).")
]
Status = Annotated[
    str | None,
    typer.Option(
        "--status",
        metavar="STATUS[,STATUS]",
        callback=choices(*WAITABLE, several=True),
        help="Wait for these statuses (" + ", ".join(WAITABLE) + "; default: any final one). "
        "Exit 0 only if the commands are in one of them.",
    ),
]
WaitTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0,
        show_default=False,
        help="Give up after this long (exit 7); default: wait as long as it takes.",
    ),
]


def _wait_parts(
    app_ctx: AppContext,
    command_ids: list[str],
    batch_id: str | None,
    any_: bool,
    statuses: list[str] | None,
    deadline: float | None,
) -> CommandWaitResult:
    """The wait, in long requests of at most MAX_WAIT_IDS ids each (`... -q | xargs llmgine
    command wait` with more was the daemon's VALIDATION_ERROR): each part until it is done,
    the next with what is left of --timeout; after one timed out, the rest as they stand."""
    client = app_ctx.client()
    parts = [command_ids[i : i + MAX_WAIT_IDS] for i in range(0, len(command_ids), MAX_WAIT_IDS)] or [[]]
    results: list[CommandWaitResult] = []
    timed_out = False
    for part in parts:
        while True:
            left = LONG_POLL_S if deadline is None else max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            result = client.wait_commands(
                part, batch_id=batch_id, any=any_, status=statuses, timeout=0.0 if timed_out else left
            )
            if result.done or timed_out or (deadline is not None and time.monotonic() >= deadline):
                break
        timed_out = timed_out or not result.done
        results.append(result)
    if len(results) == 1:
        return results[0]
    return CommandWaitResult(
        commands=[c for r in results for c in r.commands],
        done=all(r.done for r in results),
        reached=[i for r in results for i in r.reached],
    )


def wait_and_report(
    app_ctx: AppContext,
    command_ids: list[str],
    *,
    batch_id: str | None = None,
    any_: bool = False,
    status: str | None = None,
    timeout: float | None = None,
    output: Any = None,
    quiet: bool = False,
    on_done: str | None = None,
) -> int:
    """Wait (in long requests), print the commands, run ``on_done`` once per command that
    ended (llmgine_cli/on_done.py), return the exit code."""
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    if any_ and len(command_ids) > MAX_WAIT_IDS:
        raise typer.BadParameter(f"--any waits for at most {MAX_WAIT_IDS} commands (one request)", param_hint="--any")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        result = _wait_parts(app_ctx, command_ids, batch_id, any_, statuses, deadline)
    except KeyboardInterrupt:
        app_ctx.env.after_ctrl_c()
        app_ctx.env.err("interrupted: the commands keep running in the daemon")
        return ExitStatus.INTERRUPTED
    data = msgspec.to_builtins(result)
    fmt = resolve_format(app_ctx.env, output)
    if fmt not in ("json", "jsonl"):
        for item in data["commands"]:
            # A table cuts RESULT to the terminal itself (cut to 20 first, a failed command
            # read `COMMAND_EXECUTION_F…` even at 140 columns); plain text keeps to 80 columns.
            item["summary"] = summary(item, 60 if fmt == "table" else 20)
    render(app_ctx.env, data, WAIT_VIEW, output, quiet)
    if not result.done:
        if not quiet:
            pending = len(result.commands) - len(result.reached)
            app_ctx.env.err(f"timed out: {pending} of {len(result.commands)} command(s) not there yet")
        return ExitStatus.TIMEOUT
    ok = set(statuses) if statuses else {"completed"}
    by_id = {c.command_id: c for c in result.commands}
    judged = [by_id[i] for i in result.reached] if any_ else result.commands
    if on_done:
        from llmgine_cli.on_done import run_hook

        for c in judged:
            if c.status in TERMINAL:
                run_hook(app_ctx.env, on_done, msgspec.to_builtins(c))
    good = any(c.status in ok for c in judged) if any_ else all(c.status in ok for c in judged)
    return ExitStatus.OK if good else ExitStatus.ERROR


UNFINISHED = ",".join(UNFINISHED_STATUSES)


WaitSession = Annotated[
    str | None,
    session_option(
        "Find short ids among this session's commands, finished ones too (not LLMGINE_SESSION: "
        "without -S the ids may be of any session).",
        envvar=None,
    ),
]


def in_session(app_ctx: AppContext, session: str | None, given: list[str]) -> list[str]:
    """`command wait 9cfb8948 -S demo`: short ids and prefixes among the session's commands
    (finished ones too, as `command get` takes them); -S was a usage error."""
    if session is None:
        return given
    from llmgine_cli.hot import resolve_id

    path = f"/api/sessions/{session}/commands"
    return [resolve_id(app_ctx, "command", g, path, "commands", "command_id") for g in given]


def full_ids(app_ctx: AppContext, given: list[str]) -> list[str]:
    """The commands' full ids. A short id or a prefix (as `llmgine ps` and the tables show
    them) names one of the unfinished commands of every session; the daemon knows only full
    ids, so one given as the table showed it was COMMAND_NOT_FOUND."""
    from llmgine_cli import ids

    if all(ids.is_full_id(g) for g in given):
        return given
    from llmgine_cli.errors import ApiError, api_error
    from llmgine_cli.hot import resolve_id

    out = []
    for g in given:
        try:
            out.append(
                resolve_id(
                    app_ctx,
                    "command",
                    g,
                    "/api/commands",
                    "commands",
                    "command_id",
                    {"status": UNFINISHED},
                    paged=False,
                )
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise api_error(
                404,
                exc.code,
                f"{exc.message} among the unfinished commands of every session (`llmgine ps`); "
                "give a finished command's session too (-S SESSION) or its full id",
            ) from None
    return out


def locate(app_ctx: AppContext, session: str | None, given: str) -> tuple[str, str]:
    """The session and full id of the command ``given`` names: in ``session`` (its short ids,
    finished commands too), else in any session (a full id, or an unfinished command's short
    id as `llmgine ps` shows it), whose session the daemon says (a wait that does not wait)."""
    if session is not None:
        return session, in_session(app_ctx, session, [given])[0]
    command_id = full_ids(app_ctx, [given])[0]
    return app_ctx.client().wait_commands([command_id], timeout=0).commands[0].session_id, command_id


AnySession = Annotated[
    str | None,
    session_option(
        "The command's session, where its short id is looked for (default: LLMGINE_SESSION; without "
        "one, a full id of any session, or an unfinished command's short id as `llmgine ps` shows it)."
    ),
]


def wait_command(
    app_ctx: AppContext,
    command_ids: list[str],
    any_: bool,
    status: str | None,
    timeout: float | None,
    output: Any,
    quiet: bool,
    on_done: str | None = None,
) -> None:
    code = wait_and_report(
        app_ctx,
        full_ids(app_ctx, command_ids),
        any_=any_,
        status=status,
        timeout=timeout,
        output=output,
        quiet=quiet,
        on_done=on_done,
    )
    if code:
        raise typer.Exit(code)
