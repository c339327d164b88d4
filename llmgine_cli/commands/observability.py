"""`llmgine logs | log | metrics | trace | traces` ↔ daemon api/observability.py.

Top-level commands (app.py adds this Typer without a name): "what happened, how long did it
take, and why did it fail" should be one short word away.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from llmgine_cli.commands.args import (
    choices,
    id_argument,
    parse_pairs,
    parse_time,
    session_callback,
    session_filter_callback,
    stdin_argument,
)
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format
from llmgine_cli.render_observability import render_log_records, render_metrics, render_trace

app = typer.Typer()

LEVELS = ("debug", "info", "warning", "error", "critical")
TRACES_VIEW = View(
    columns=(
        "TRACE=trace_id, ROOT=root, START=start, TOOK=duration_ms, SPANS=span_count, STATUS=status, SESSION=session_id"
    ),
    items="traces",
    id_field="trace_id",
)
LOG_VIEW = View(id_field="id")


def _level(value: str | None) -> str | None:
    if value is None:
        return None
    lowered = {"warn": "warning"}.get(value.lower(), value.lower())
    if lowered not in LEVELS:
        raise typer.BadParameter(f"must be one of {', '.join(LEVELS)}", param_hint="--level")
    return lowered


@app.command("logs")
def logs(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    level: Annotated[
        str | None,
        typer.Option(
            "--level", "-l", metavar="LEVEL", help="This level and above: debug, info, warning, error or critical."
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session", "-S", "-s", callback=session_filter_callback, metavar="ID", help="Only this session."
        ),
    ] = None,
    command: Annotated[str | None, typer.Option("--command", metavar="ID", help="Only this command.")] = None,
    trace: Annotated[str | None, typer.Option("--trace", metavar="ID", help="Only this trace.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="WHEN", help="ISO time or a duration ago: 90s, 15m, 1h, 2d.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="WHEN", help="ISO time or a duration ago.")] = None,
    grep: Annotated[
        str | None,
        typer.Option("--grep", "-g", metavar="TEXT", help="Only records whose message contains TEXT (any case)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, max=1000, help="The newest N records.")
    ] = 100,
    interval: Annotated[float, typer.Option("--interval", min=0.1, hidden=True)] = 1.0,
    polls: Annotated[int, typer.Option("--polls", min=0, hidden=True, help="Stop -f after N polls (tests).")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show the daemon's log records, oldest first (-f follows, Ctrl-C stops).

    Examples:

      llmgine logs -f --level warning -S demo

      llmgine logs --since 15m --grep timeout -o jsonl | jq -r .message
    """
    app_ctx = state(ctx)
    env = app_ctx.env
    client = app_ctx.client()
    query: dict[str, Any] = dict(
        level=_level(level),
        session_id=session,
        command_id=command,
        trace_id=trace,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        q=grep,
    )
    page = client.logs(limit=limit, **query)
    fmt = resolve_format(env, output)
    if quiet:
        render(env, page, View(items="logs", id_field="id"), output, quiet)
    elif fmt == "json" and not follow:
        render(env, page, View(items="logs"), output)
    else:
        render_log_records(env, page.logs, fmt)
    if not follow:
        return
    cursor = page.next_after
    done = 0
    try:
        while not polls or done < polls:
            time.sleep(interval)
            env.check_reader()  # `logs -f | head -1`: ends when head does
            done += 1
            page = client.logs(limit=1000, after=cursor, **{**query, "since": None})
            if page.logs:
                render_log_records(env, page.logs, "jsonl" if fmt == "json" else fmt)
            cursor = page.next_after
    except KeyboardInterrupt:
        env.after_ctrl_c()
        raise typer.Exit(130) from None  # Ctrl-C: as every wait ends (exit 130)


@app.command("log")
def log(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="The message to record; - reads it from stdin.")],
    level: Annotated[
        str, typer.Option("--level", "-l", metavar="LEVEL", help="debug, info, warning, error or critical.")
    ] = "info",
    session: Annotated[
        str | None,
        typer.Option("--session", "-S", "-s", callback=session_callback, metavar="ID", help="Attach it to a session."),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Metadata: KEY=string or KEY:=JSON; repeatable."),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Write a record into the daemon's log (marked as coming from a client).

    Examples:

      llmgine log "backup finished" --level info -m host=db1

      df -h / | tail -1 | llmgine log - --level warning -m check=disk
    """
    if message == "-":  # as `engine exec ID -`: the text piped in, its last newline cut
        message = stdin_argument("MESSAGE", "the message").removesuffix("\n")
    if not message:  # `llmgine log "$MSG"` with MSG unset: was the daemon's 422, exit 1
        raise typer.BadParameter("the message is empty", param_hint="MESSAGE")
    app_ctx = state(ctx)
    record = app_ctx.client().post_log(
        message, level=_level(level) or "info", metadata=parse_pairs(meta, "--meta"), session_id=session
    )
    render(app_ctx.env, record, LOG_VIEW, output, quiet)


@app.command("metrics")
def metrics(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Option("--session", "-S", "-s", callback=session_callback, metavar="ID", help="Only this session."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", "-i", min=0.2, help="Seconds between refreshes.")] = 2.0,
    count: Annotated[int, typer.Option("--count", min=0, hidden=True, help="Stop --watch after N refreshes.")] = 0,
    output: Output = None,
) -> None:
    """Counters and latency percentiles: requests, commands, events, storage, LLM calls, sandbox.

    Rates are per second: since the previous refresh with --watch, else since the daemon started.

    Examples:

      llmgine metrics -S demo

      llmgine metrics --watch --interval 5
    """
    app_ctx = state(ctx)
    env = app_ctx.env
    client = app_ctx.client()
    fmt = resolve_format(env, output)
    snapshot = client.metrics(session)
    if not watch:
        render_metrics(env, snapshot, fmt)
        return
    done = 0
    try:
        if fmt == "table" and env.redraws:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=env.stdout, force_terminal=True)
            with Live(render_metrics(env, snapshot, fmt, console=console), console=console, auto_refresh=False) as live:
                while not count or done < count:
                    time.sleep(interval)
                    done += 1
                    previous, snapshot = snapshot, client.metrics(session)
                    live.update(
                        render_metrics(env, snapshot, fmt, previous=previous, interval=interval, console=console),
                        refresh=True,
                    )
        else:
            render_metrics(env, snapshot, fmt)
            while not count or done < count:
                time.sleep(interval)
                done += 1
                previous, snapshot = snapshot, client.metrics(session)
                if fmt not in ("json", "jsonl"):
                    env.out("")
                render_metrics(env, snapshot, fmt, previous=previous, interval=interval)
    except KeyboardInterrupt:
        if not (fmt == "table" and env.redraws):  # not the live view: the echoed ^C ends a line
            env.after_ctrl_c()
        raise typer.Exit(130) from None  # Ctrl-C: as every wait ends (exit 130)


@app.command("trace")
def trace(
    ctx: typer.Context,
    trace_id: Annotated[
        str,
        id_argument(
            "trace",
            "/api/observability/traces",
            "traces",
            "trace_id",
            help="The trace: its id (32 hex digits), a unique prefix or its short id.",
            paged=False,
        ),
    ],
    output: Output = None,
) -> None:
    """Draw one trace as a waterfall tree: spans, offsets, durations; errors in red.

    Examples:

      T=$(llmgine traces --limit 1 -q)

      llmgine trace "$T"
    """
    app_ctx = state(ctx)
    render_trace(app_ctx.env, app_ctx.client().trace(trace_id), resolve_format(app_ctx.env, output))


@app.command("traces")
def traces(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Option(
            "--session", "-S", "-s", callback=session_filter_callback, metavar="ID", help="Only this session."
        ),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="WHEN", help="ISO time or 15m, 1h, 2d.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", metavar="STATUS", help="ok or error.", callback=choices("ok", "error"))
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", "-l", metavar="N", min=1, max=1000, help="At most this many.")
    ] = 50,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List recent traces, newest first (`llmgine trace ID` draws one).

    Examples:

      llmgine traces --status error --since 1h

      llmgine traces -S demo --limit 3 -q | xargs -r -n1 llmgine trace
    """
    app_ctx = state(ctx)
    page = app_ctx.client().traces(session_id=session, since=parse_time(since, "--since"), status=status, limit=limit)
    render(app_ctx.env, page, TRACES_VIEW, output, quiet)
