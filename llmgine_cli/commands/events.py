"""`llmgine event ...` ↔ daemon api/events.py."""

from __future__ import annotations

from typing import Annotated

import typer

from llmgine_cli import completion, hot
from llmgine_cli.commands.args import SessionOpt, id_argument, parse_object, parse_pairs, parse_time
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
    """Append an event to a session's log (`-q` prints its id)."""
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
    source: Annotated[str | None, typer.Option("--source", help="api, engine, handler or bus.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, max=1000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List a session's events in log (seq) order."""
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
    if not quiet and resolve_format(app_ctx.env, output) in ("table", "plain") and page.total > offset + shown:
        app_ctx.env.err(f"showing {shown} of {page.total} (next page: --after {page.next_after})")


@app.command("get")
def get(
    ctx: typer.Context,
    event_id: Annotated[
        str,
        id_argument("event", "/api/sessions/{session}/events", "events", "event_id", in_session=True),
    ],
    session: SessionOpt,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show one event."""
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_event(session, event_id), EVENT_VIEW, output, quiet)


def _add_tail() -> None:
    # `event tail` holds a stream open (llmgine_cli/stream.py), so it lives in its own module.
    from llmgine_cli.commands.event_tail import tail

    app.command("tail")(tail)


_add_tail()
