"""`llmgine command ...` ↔ daemon api/commands.py."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import COMMAND_STATUSES, Batch, Command

from llmgine_cli import completion, hot
from llmgine_cli.commands import batches, cancel, waiting
from llmgine_cli.commands.args import (
    LONG_POLL_S,
    SessionOpt,
    choices,
    command_metadata,
    id_argument,
    parse_object,
    parse_pairs,
    summary,
)
from llmgine_cli.context import AppContext
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, cut_note, render, resolve_format
from llmgine_cli.render_observability import render_trace
from llmgine_cli.status import ExitStatus

app = typer.Typer(help="Run, inspect, list and cancel commands (and batches of them).", no_args_is_help=True)

COMMAND_VIEW = hot.COMMAND_VIEW
LIST_VIEW = View(
    columns="ID=command_id, TYPE=command_type, STATUS=status, PRIORITY=priority, CREATED=created_at, TOOK=duration_ms",
    items="commands",
    id_field="command_id",
)
BATCH_VIEW = View(
    columns="#=index, ID=command_id, TYPE=command_type, STATUS=status, TOOK=duration_ms, RESULT=summary",
    items="commands",
    id_field="command_id",
)

CommandId = Annotated[
    str,
    id_argument("command", "/api/sessions/{session}/commands", "commands", "command_id", in_session=True),
]


class PriorityLevel(StrEnum):
    high = "high"
    normal = "normal"
    low = "low"


Priority = Annotated[
    PriorityLevel | None,
    typer.Option("--priority", help="high, normal or low (default normal).", show_default=False, case_sensitive=False),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        show_default=False,
        help="Cancel the command (status timed_out) if it runs longer.",
    ),
]
OnDone = Annotated[
    str | None,
    typer.Option(
        "--on-done",
        metavar="SHELL",
        show_default=False,
        help="When the command has ended, run this shell command here (not in the daemon), with "
        "LLMGINE_STATUS, LLMGINE_COMMAND_ID, LLMGINE_SESSION_ID and LLMGINE_COMMAND_TYPE set; "
        "its output goes to stderr.",
    ),
]
CancelOnInterrupt = Annotated[
    bool,
    typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the command (default: it continues in the daemon)."),
]
NoWait = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Return once it is stored; do not wait for it to finish (one that finished at once comes back finished).",
    ),
]


def retry_metadata(retries: int | None, backoff: str | None, retry_on: list[str] | None) -> dict[str, Any]:
    """--retries/--backoff/--retry-on as metadata.retries/backoff/retry_on."""
    metadata: dict[str, Any] = {}
    if retries is not None:
        metadata["retries"] = retries
    if backoff:
        kind, *rest = backoff.split(":")
        if kind not in ("fixed", "exponential") or len(rest) > 2:
            raise typer.BadParameter("use fixed or exponential, then :BASE and :CAP seconds", param_hint="--backoff")
        try:
            numbers = [float(x) for x in rest]
        except ValueError:
            raise typer.BadParameter("BASE and CAP are seconds", param_hint="--backoff") from None
        metadata["backoff"] = {"type": kind, **dict(zip(("base", "cap"), numbers, strict=False))}
    if retry_on:
        metadata["retry_on"] = retry_on
    return metadata


def finish_command(
    app_ctx: AppContext,
    record: Any,
    *,
    no_wait: bool,
    output: Any,
    quiet: bool,
    cancel_on_interrupt: bool = False,
    on_done: str | None = None,
) -> None:
    """Wait for it unless no_wait, print it, run --on-done; exit 1 unless it completed
    (hot.py), 130 on Ctrl-C."""
    code = hot.finish_command(
        app_ctx,
        msgspec.to_builtins(record),
        no_wait=no_wait,
        output=output,
        quiet=quiet,
        cancel_on_interrupt=cancel_on_interrupt,
        on_done=on_done,
    )
    if code:
        raise typer.Exit(code)


@app.command("run")
def run(
    ctx: typer.Context,
    command_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="The command type, e.g. DummyEngineCommand.", autocompletion=completion.command_types
        ),
    ],
    session: SessionOpt,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="KEY=VALUE",
            help="A parameter: KEY=VALUE is a string, KEY:=JSON a JSON value (n:=3), "
            "KEY=@FILE a file's text. Repeatable.",
        ),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option("--params", metavar="JSON", help="All parameters as a JSON object (or @FILE, - for stdin)."),
    ] = None,
    priority: Priority = None,
    timeout: Timeout = None,
    no_wait: NoWait = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", metavar="KEY", help="Retrying with the same key never runs the command twice."
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Print the command's events live while it runs, then its record (-o json or jsonl: "
            "an event per line as it comes, then the record: a stream for jq, not one document).",
        ),
    ] = False,
    cancel_on_interrupt: CancelOnInterrupt = False,
    on_done: OnDone = None,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after",
            metavar="ID",
            help="Run only after this command (full id, any session you may see; or an unfinished one's "
            "short id or prefix, as `llmgine ps` shows it) ended; it stays blocked until then. Repeatable.",
        ),
    ] = None,
    after_policy: Annotated[
        str | None,
        typer.Option(
            "--after-policy",
            metavar="POLICY",
            callback=choices("completed", "always"),
            help="completed (default): cancelled if one of --after did not complete; always: runs anyway.",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            "--retries",
            min=0,
            max=100,
            metavar="N",
            help="Try a failed attempt again up to this many times (metadata.retries).",
        ),
    ] = None,
    backoff: Annotated[
        str | None,
        typer.Option(
            "--backoff",
            metavar="TYPE[:BASE[:CAP]]",
            help="Delay between attempts: exponential (default, base 1 s, cap 300 s) or fixed, "
            "e.g. exponential:2:60 or fixed:5.",
        ),
    ] = None,
    retry_on: Annotated[
        list[str] | None,
        typer.Option("--retry-on", metavar="CODE", help="Retry only on this error code. Repeatable."),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Run a command in a session and print its result (exit 1 if it did not complete).

    Examples:

      llmgine command run Greet -S demo -p name=Ada -o json | jq .result

      ID=$(llmgine command run Report -S demo -p day:=3 --no-wait -q)

      llmgine command run Report -S demo --follow --on-done 'echo $LLMGINE_STATUS'
    """
    app_ctx = state(ctx)
    if on_done and no_wait:
        raise typer.BadParameter("--on-done runs when the command ends: it needs the waiting --no-wait skips")
    # Both were taken in silence: --no-wait printed no event, and -q put the events before the
    # id, so `ID=$(llmgine command run T --follow -q)` held the events too.
    if follow and no_wait:
        raise typer.BadParameter("--follow prints the events until the command ends: the waiting --no-wait skips")
    if follow and quiet:
        raise typer.BadParameter("-q prints only the id, --follow the events too: give one (-o jsonl parses both)")
    parameters = {**parse_object(params, "--params"), **parse_pairs(param, "--param")}
    metadata = command_metadata(priority.value if priority else None, timeout)
    metadata.update(retry_metadata(retries, backoff, retry_on))
    if after:
        after = waiting.full_ids(app_ctx, after)  # the daemon knows only full ids
    if follow and not no_wait:
        from llmgine_cli.commands.event_tail import follow_command

        submitted: list[Command] = []

        def submit() -> Command:
            submitted.append(
                app_ctx.client().submit_command(
                    session,
                    command_type,
                    parameters,
                    metadata,
                    idempotency_key=idempotency_key,
                    after=after or (),
                    after_policy="always" if after_policy == "always" else "completed",
                )
            )
            return submitted[0]

        try:
            record = follow_command(app_ctx, session, submit, output)
        except KeyboardInterrupt:
            if not submitted:
                raise
            app_ctx.env.after_ctrl_c()  # --follow prints events: no spinner redraws the line
            # As without --follow: say the command goes on (or cancel it), exit 130.
            code = hot.interrupted(app_ctx, msgspec.to_builtins(submitted[0]), cancel=cancel_on_interrupt)
            raise typer.Exit(code) from None
        finish_command(
            app_ctx,
            record,
            no_wait=False,
            output=output,
            quiet=quiet,
            cancel_on_interrupt=cancel_on_interrupt,
            on_done=on_done,
        )
        return
    code = hot.command_run(
        app_ctx,
        session=session,
        command_type=command_type,
        parameters=parameters,
        metadata=metadata,
        no_wait=no_wait,
        idempotency_key=idempotency_key,
        output=output,
        quiet=quiet,
        cancel_on_interrupt=cancel_on_interrupt,
        on_done=on_done,
        after=after,
        after_policy=after_policy,
    )
    if code:
        raise typer.Exit(code)


@app.command("get")
def get(
    ctx: typer.Context,
    command_id: CommandId,
    session: waiting.AnySession = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until it finished.")] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Draw the command's trace as a waterfall (as `llmgine trace`) instead.")
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show one command: status, result or error, timings, parameters.

    Examples:

      ID=$(llmgine command run Greet -S demo -p name=Ada --no-wait -q)

      llmgine command get "$ID" --format '{{.status}} {{json .result}}'
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    session, command_id = waiting.locate(app_ctx, session, command_id)
    record = client.get_command(session, command_id, wait=LONG_POLL_S if wait else 0)
    if wait:
        waited = hot.wait_for(app_ctx, msgspec.to_builtins(record))
        if waited is None:
            raise typer.Exit(hot.interrupted(app_ctx, msgspec.to_builtins(record), cancel=False))
        record = msgspec.convert(waited, Command)
    if trace:
        if record.trace_id is None:
            app_ctx.env.err(f"error: command {record.command_id} has no trace")
            raise typer.Exit(ExitStatus.NOT_FOUND)
        if quiet:
            app_ctx.env.out(record.trace_id)
            return
        render_trace(app_ctx.env, client.trace(record.trace_id), resolve_format(app_ctx.env, output))
        return
    finish_command(app_ctx, record, no_wait=True, output=output, quiet=quiet)


@app.command("list")
def list_(
    ctx: typer.Context,
    session: SessionOpt,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            callback=choices(*COMMAND_STATUSES, several=True),
            help="queued, blocked, executing, completed, failed, timed_out, "
            "cancelled or interrupted; comma-separated for several.",
        ),
    ] = None,
    command_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this command type.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", metavar="ID", help="Only this batch.")] = None,
    dead: Annotated[
        bool, typer.Option("--dead", help="Only dead letters: failed or timed out after being retried.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many.")
    ] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List a session's commands, newest first.

    Examples:

      llmgine command list -S demo --status failed -o jsonl | jq -r .error.code

      llmgine command list -S demo -o 'table {{.command_id}}\\t{{.error.message}}'
    """
    app_ctx = state(ctx)
    page = app_ctx.client().list_commands(
        session, status=status, command_type=command_type, batch_id=batch, limit=limit, offset=offset, dead=dead
    )
    render(app_ctx.env, page, LIST_VIEW, output, quiet)
    cut_note(app_ctx.env, output, quiet, page.total, offset, len(page.commands))


@app.command("wait")
def wait(
    ctx: typer.Context,
    command_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID...",
            help="The commands: full ids (of any session you may see), or an unfinished one's short id or "
            "prefix (as `llmgine ps` shows them); with -S, any of that session's by its short id or prefix.",
        ),
    ],
    session: waiting.WaitSession = None,
    any_: waiting.Any_ = False,
    status: waiting.Status = None,
    timeout: waiting.WaitTimeout = None,
    on_done: OnDone = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Wait until the commands finished (or reached --status) and print them: exit 0 if all
    completed, 1 if one did not, 7 on --timeout. --on-done runs once per command that ended.

    Examples:

      A=$(llmgine command run Greet -S demo -p name=Ada --no-wait -q)

      B=$(llmgine command run Greet -S demo -p name=Bo --no-wait -q)

      llmgine command wait "$A" --timeout 60 -o json | jq -r .commands[].status

      llmgine command wait "$A" "$B" --any --on-done 'echo $LLMGINE_STATUS'
    """
    app_ctx = state(ctx)
    command_ids = waiting.in_session(app_ctx, session, command_ids)
    waiting.wait_command(app_ctx, command_ids, any_, status, timeout, output, quiet, on_done)


@app.command("retry")
def retry(
    ctx: typer.Context,
    session: SessionOpt,
    command_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="The commands (of --session): ids, unique prefixes or short ids."),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed or timed-out command of the session.")] = False,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead letter of the session.")] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Run finished commands again (same ids, attempt + 1): those named, or --failed, or --dead.
    Exit 6 if one has not finished or completed; `llmgine command wait ID...` waits for them.

    Examples:

      llmgine command retry --failed -S demo

      llmgine command retry --dead -S demo -q | xargs -r llmgine command wait
    """
    if not command_ids and not (failed or dead):
        raise typer.BadParameter("name the commands, or give --failed or --dead", param_hint="ID")
    app_ctx = state(ctx)
    from llmgine_cli.hot import resolve_id
    from llmgine_cli.ids import Ambiguous

    where = f"/api/sessions/{session}/commands"
    try:  # as every other command takes them (the daemon knows only full ids)
        named = [resolve_id(app_ctx, "command", c, where, "commands", "command_id") for c in command_ids or []]
    except Ambiguous as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from None
    page = app_ctx.client().retry_commands(session, named, failed=failed, dead=dead)
    render(app_ctx.env, page, LIST_VIEW, output, quiet)
    if not quiet and resolve_format(app_ctx.env, output) in ("table", "plain"):
        app_ctx.env.err(f"{len(page.commands)} command(s) queued again")


app.command("cancel")(cancel.cancel)  # ID... of any session (commands/cancel.py)


@app.command("batch")
def batch(
    ctx: typer.Context,
    session: SessionOpt,
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE",
            help="JSON Lines or a JSON array of {command_type, parameters, metadata}; - for stdin.",
        ),
    ],
    sequential: Annotated[
        bool, typer.Option("--sequential", help="One after another in file order (default: in parallel).")
    ] = False,
    stop_on_error: Annotated[
        bool, typer.Option("--stop-on-error", help="Cancel what has not finished once one fails.")
    ] = False,
    no_wait: NoWait = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Submit many commands at once (all or nothing) and print one result per command.

    Example (one JSON object a line; -q prints the commands' ids):

      echo '{"command_type": "Greet", "parameters": {"name": "Ada"}}' > jobs.jsonl

      llmgine command batch -f jobs.jsonl -S demo
    """
    app_ctx = state(ctx)
    commands = batches.read_batch_file(file)
    client = app_ctx.client()
    from llmgine_cli.progress import Bar, enabled, spinner

    # A big batch on a terminal: a progress bar (short polls to redraw it); else long polls.
    show_bar = not no_wait and len(commands) > BAR_OVER and enabled(app_ctx.env)
    poll = 1.0 if show_bar else LONG_POLL_S
    with spinner(app_ctx.env, f"submitting {len(commands)} commands"):
        result = client.submit_batch(
            session,
            commands,
            mode="sequential" if sequential else "parallel",
            stop_on_error=stop_on_error,
            wait=0,  # the id first: Ctrl-C in the wait below can then name the batch that goes on
        )
    try:
        with Bar(app_ctx.env, len(commands), "batch") as bar:
            while not no_wait and result.status != "finished":
                if show_bar:
                    bar.update(sum(1 for c in result.commands if c.status in TERMINAL))
                result = client.get_batch(session, result.batch_id, wait=poll)
    except KeyboardInterrupt:
        if not show_bar:
            app_ctx.env.after_ctrl_c()
        app_ctx.env.err(
            f"interrupted: batch {result.batch_id} keeps running "
            f"(llmgine command list --session {session} --batch {result.batch_id})"
        )
        raise typer.Exit(130) from None
    render_batch(app_ctx, result, output, quiet)
    counts: dict[str, int] = {}
    for c in result.commands:
        counts[c.status] = counts.get(c.status, 0) + 1
    n = len(result.commands)
    line = f"batch {result.batch_id}: {n} command{'' if n == 1 else 's'}, " + ", ".join(
        f"{n} {s}" for s, n in sorted(counts.items())
    )
    shown = not quiet and resolve_format(app_ctx.env, output) in ("table", "plain")
    if shown:
        app_ctx.env.err(line)
    if not no_wait and any(c.status != "completed" for c in result.commands):
        if not shown:  # -q, -o json: exit 1 says why on stderr, as `command run` does
            app_ctx.env.err(f"error: {line}")
        raise typer.Exit(ExitStatus.ERROR)


BAR_OVER = 200  # a batch of more commands than this gets a progress bar (on a terminal)
TERMINAL = frozenset({"completed", "failed", "timed_out", "cancelled", "interrupted"})


def render_batch(app_ctx: AppContext, result: Batch, output: Any, quiet: bool) -> None:
    fmt = resolve_format(app_ctx.env, output)
    if fmt in ("json", "jsonl") or "{{" in fmt or quiet:  # the API's data (templates too)
        render(app_ctx.env, result, View(items="commands", id_field="command_id"), output, quiet)
        return
    data = msgspec.to_builtins(result)
    for index, item in enumerate(data["commands"]):
        item["index"] = index
        item["summary"] = summary(item)
    render(app_ctx.env, data, BATCH_VIEW, output, quiet)
