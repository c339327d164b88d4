"""`llmgine event ...` ↔ daemon api/events.py."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from llmgine_daemon.protocol import EVENT_SOURCES

from llmgine_cli import completion, hot
from llmgine_cli.commands.args import SessionOpt, choices, id_callback, parse_object, parse_pairs, parse_time
from llmgine_cli.errors import ApiError
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format

app = typer.Typer(help="Publish, list and inspect a session's events.", no_args_is_help=True)

EVENT_VIEW = hot.EVENT_VIEW
LIST_VIEW = View(
    columns="SEQ=seq, TYPE=event_type, SOURCE=source, TIME=timestamp, DATA=data",
    items="events",
    id_field="event_id",
)


@app.command("publish")
def publish(
    ctx: typer.Context,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="The event type, e.g. StatusUpdate.", autocompletion=completion.event_types
        ),
    ],
    session: SessionOpt,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", metavar="JSON", help="The data: a JSON object, @FILE, or - (stdin)."),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Metadata: KEY=string or KEY:=JSON; repeatable."),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Append an event to a session's log (`-q` prints its id).

    Examples:

      llmgine event publish OrderPlaced -S demo -d '{"order": 7}' -q

      echo '{"order": 8}' | llmgine event publish OrderPlaced -S demo --data -
    """
    hot.event_publish(
        state(ctx),
        session=session,
        event_type=event_type,
        data=parse_object(data, "--data"),
        metadata=parse_pairs(meta, "--meta"),
        output=output,
        quiet=quiet,
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    session: SessionOpt,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Only this type; Prefix* for a prefix.",
            autocompletion=completion.event_types,
        ),
    ] = None,
    after: Annotated[
        int | None, typer.Option("--after", metavar="SEQ", min=0, help="Only events after this seq (a cursor).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="WHEN", help="10m, 2h, 1d ago, or an ISO 8601 time.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="WHEN", help="Before this time.")] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", metavar="SOURCE", help="api, engine, handler or bus.", callback=choices(*EVENT_SOURCES)
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many.")
    ] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List a session's events in log (seq) order.

    Example:

      llmgine event list -S demo --type 'Command*' --since 1h -o jsonl | jq .seq
    """
    app_ctx = state(ctx)
    page = app_ctx.client().list_events(
        session,
        event_type=event_type,
        after=after,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        source=source,
        limit=limit,
        offset=offset,
    )
    render(app_ctx.env, page, LIST_VIEW, output, quiet)
    shown = len(page.events)
    if (quiet or resolve_format(app_ctx.env, output) in ("table", "plain")) and page.total > offset + shown:
        app_ctx.env.err(f"showing {shown} of {page.total} (next page: --after {page.next_after})")


_BY_ID = id_callback("event", "/api/sessions/{session}/events", "events", "event_id", in_session=True)


def _event_ref(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """An event by its seq, the number `event list` shows (its listing has no ID column), or
    as every id is given. A number that is also a short id or prefix of another event is
    ambiguous (a usage error)."""
    from llmgine_cli.ids import is_full_id, short_id

    session = ctx.params.get("session")
    if (
        value is None
        or ctx.resilient_parsing
        or not (value.isascii() and value.isdigit())
        or is_full_id(value)
        or session is None
    ):
        return _BY_ID(ctx, param, value)
    seq = int(value)
    # Past SQLite's INTEGER no event has that seq (the listing's `after` would be a 422 naming
    # `after`, a parameter the user never gave): the value is then only an id's start.
    in_range = 0 < seq <= 2**63 - 1
    page = state(ctx).client().list_events(session, after=seq - 1, limit=1) if in_range else None
    by_seq = page.events[0].event_id if page and page.events and page.events[0].seq == seq else None
    if by_seq is None:
        return _BY_ID(ctx, param, value)
    if len(value) < 4:  # too short to name an id
        return by_seq
    try:
        by_id = _BY_ID(ctx, param, value)
    except (ApiError, typer.BadParameter):
        return by_seq
    if by_id not in (value, by_seq):
        raise typer.BadParameter(
            f"{value!r} is the seq of event {short_id(by_seq)} and names event {short_id(by_id)} by its id: "
            "give more of the id, or the full id"
        )
    return by_seq


@app.command("get")
def get(
    ctx: typer.Context,
    event_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="The event: its seq (as `event list` shows it), its id, a unique prefix or its short id.",
            callback=_event_ref,
        ),
    ],
    session: SessionOpt,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show one event.

    Examples:

      ID=$(llmgine event publish Note -S demo -q)

      llmgine event get "$ID" -S demo -o json
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_event(session, event_id), EVENT_VIEW, output, quiet)


def _add_tail() -> None:
    # `event tail` holds a stream open (llmgine_cli/stream.py), so it lives in its own module.
    from llmgine_cli.commands.event_tail import tail

    app.command("tail")(tail)


_add_tail()
