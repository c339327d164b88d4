"""`llmgine event tail` ↔ daemon api/streams.py (the live stream; llmgine_cli/stream.py).

Kept apart from the request/response `event` commands (commands/events.py): this one holds a
connection open, reconnects and resumes, and renders as events arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import EVENT_SOURCES, Command, Event
from llmgine_daemon.textsafe import json_visible

from llmgine_cli import completion
from llmgine_cli.commands.args import choices, parse_time, session_callback
from llmgine_cli.context import AppContext, reader_gone_error
from llmgine_cli.options import Quiet, output_option, state
from llmgine_cli.render import resolve_format
from llmgine_cli.template import apply as apply_template


def parse_since(value: str | None) -> int | str | None:
    """SEQ (events after it), 30s/10m/2h/1d/1w (that long ago), an ISO time, or all
    (everything); the durations and times as every --since reads them (args.parse_time)."""
    if value is None or value == "now":
        return None
    text = value.strip().lower()
    if text == "all":
        return 0
    if text.isascii() and text.isdigit():  # str.isdigit() is also true of "²", which int() refuses
        return int(text)
    try:
        return parse_time(value, "--since")
    except typer.BadParameter:
        raise typer.BadParameter(
            f"{value!r}: use a seq, a duration (30s, 10m, 2h, 1d, 1w), an ISO time or all",
            param_hint="--since",
        ) from None


def tail(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Argument(
            metavar="[SESSION]",
            help="The session to follow (default: LLMGINE_SESSION; or --all).",
            show_default=False,
            autocompletion=completion.session_ids,
            callback=session_callback,
        ),
    ] = None,
    session_opt: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-S",
            metavar="ID",
            help="The session to follow, like SESSION (as other commands take it).",
            autocompletion=completion.session_ids,
            show_default=False,
            callback=session_callback,
        ),
    ] = None,
    all_sessions: Annotated[bool, typer.Option("--all", "-a", help="Follow every session.")] = False,
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Only this type (Prefix* for a prefix); repeatable.",
            autocompletion=completion.event_types,
        ),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            metavar="SOURCE",
            help="Only this source (api, engine, handler, bus); repeatable.",
            callback=choices(*EVENT_SOURCES),
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="SEQ|10m|all",
            help="Start after this seq, this long ago, at an ISO time, or with all history (default: new events only).",
        ),
    ] = None,
    no_reconnect: Annotated[
        bool, typer.Option("--no-reconnect", help="Exit 3 when the daemon goes away instead of reconnecting.")
    ] = False,
    output: output_option("a live view on a terminal, jsonl when piped") = None,
    quiet: Quiet = False,
) -> None:
    """Print events as they happen (Ctrl-C stops). Resumes across daemon restarts.

    On a terminal: a live view. Piped: one JSON object per line, flushed per event; -q: the
    events' ids, one per line.

    Examples:

      llmgine event tail -S demo -t 'Command*' | jq -r .data.command_id

      FIRST=$(llmgine event tail -S demo -t CommandResult -q | head -1)

      llmgine event tail --all --since 10m --source engine
    """
    if session_opt is not None:
        if session is not None and session != session_opt:
            raise typer.BadParameter("give the session once (SESSION or --session)", param_hint="SESSION")
        session = session_opt
    if session is not None and all_sessions:
        raise typer.BadParameter("give a SESSION or --all, not both", param_hint="SESSION")
    app_ctx = state(ctx)
    if session is None and not all_sessions:  # as every command that takes -S: LLMGINE_SESSION
        session = session_callback(ctx, None, app_ctx.env.environ.get("LLMGINE_SESSION") or None)
        if session is None:
            raise typer.BadParameter("give a SESSION (or -S, or set LLMGINE_SESSION) or --all", param_hint="SESSION")
    env = app_ctx.env
    fmt = resolve_format(env, output)
    if fmt == "plain" and output is None:
        fmt = "jsonl"  # piped by default: machine-readable lines
    from llmgine_cli.live import event_line  # only when tailing: off the start-up path
    from llmgine_cli.stream import EventStream

    stream = EventStream(
        app_ctx.client(),
        session,
        event_types=event_type or (),
        sources=source or (),
        since=parse_since(since),
        reconnect=not no_reconnect,
        on_status=lambda text: env.err(f"llmgine: {text}"),
    )
    live = fmt == "table" and env.redraws and not quiet
    try:
        if live:
            from llmgine_cli.live import LiveTail

            with LiveTail(env, title=session or "all sessions") as view:
                stream.on_status = lambda text: view.status(text)
                for item in stream:
                    if isinstance(item, Event):
                        view.add(item)
                    else:
                        view.notice(item)
        else:
            # `event tail | head -1`: ends when head does, not at the next event after it.
            env.on_reader_gone(stream.stop)
            for item in stream:
                if not isinstance(item, Event):
                    continue
                if quiet:
                    env.out(item.event_id)
                elif fmt in ("json", "jsonl"):
                    env.out(json_visible(msgspec.json.encode(item).decode()))
                elif "{{" in fmt:  # -o/--format TEMPLATE: a line per event
                    apply_template(env, fmt, [msgspec.to_builtins(item)])
                else:
                    env.out(event_line(item))
                env.stdout.flush()
            if stream.stopped:
                raise reader_gone_error()  # as a write that failed would
    except KeyboardInterrupt:
        if not live:  # the live view ends its own line
            env.after_ctrl_c()
        raise typer.Exit(130) from None  # Ctrl-C ends a tail as it ends every wait: 130
    finally:
        stream.close()


def follow_command(app_ctx: AppContext, session_id: str, submit: Callable[[], Command], output: Any) -> Command:
    """`command run --follow`: print the command's events live, then return its final record.

    The stream is opened (and the server has said where it starts) BEFORE the command is
    submitted, so even its first event cannot be missed. A session runs one command at a time,
    so everything between its CommandStarted and its CommandResult is its doing.
    """
    env = app_ctx.env
    fmt = resolve_format(env, output)
    client = app_ctx.client()
    from llmgine_daemon.protocol.streams import Hello

    from llmgine_cli.live import event_line, event_text
    from llmgine_cli.stream import EventStream, command_events

    console = None
    if fmt == "table":  # a terminal: one line per event, as `event tail` draws them (they wrapped)
        from rich.console import Console

        console = Console(file=env.stdout, force_terminal=True, highlight=False)
    stream = EventStream(client, session_id, on_status=lambda text: env.err(f"llmgine: {text}"))
    items = iter(stream)
    try:
        for item in items:  # the hello: the stream is registered
            if isinstance(item, Hello):
                break
        record = submit()
        env.on_reader_gone(stream.stop)  # `| head -1`: ends when head does (event tail's watch)
        for item in command_events(items, record.command_id):
            if fmt in ("json", "jsonl"):
                env.out(json_visible(msgspec.json.encode(item).decode()))
            elif console is not None:
                console.print(event_text(item, console.width), no_wrap=True, overflow="ellipsis", crop=True)
            else:
                env.out(event_line(item))
            env.stdout.flush()
        if stream.stopped:
            raise reader_gone_error()  # the command goes on, as after Ctrl-C
    finally:
        stream.close()
    return client.get_command(session_id, record.command_id)
