"""`llmgine session ...` ↔ daemon api/sessions.py."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmgine_cli import completion, hot
from llmgine_cli.commands.args import choices, parse_pairs, session_callback
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(help="Create, list, inspect and end sessions.", no_args_is_help=True)

LIST_VIEW = hot.SESSION_LIST_VIEW
SESSION_VIEW = hot.SESSION_VIEW
TOKEN_VIEW = View(id_field="session_token", raw_keys=frozenset({"session_token"}))

SessionId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The session: its id, a unique prefix, its short id or its name.",
        autocompletion=completion.session_ids,
        callback=session_callback,
    ),
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name for it.")] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Metadata: KEY=string or KEY:=JSON; repeatable."),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Create a session (`SID=$(llmgine session create -q)`)."""
    app_ctx = state(ctx)
    session = app_ctx.client().create_session(name, parse_pairs(meta, "--meta"))
    render(app_ctx.env, session, SESSION_VIEW, output, quiet)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help="active or closed (default: active).", callback=choices("active", "closed")
        ),
    ] = None,
    all_sessions: Annotated[bool, typer.Option("--all", "-a", help="Closed sessions too.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, max=1000, help="At most this many (1-1000).")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List the active sessions, newest first (--all: closed ones too)."""
    hot.session_list(
        state(ctx),
        LIST_VIEW,
        status=status,
        limit=limit,
        offset=offset,
        output=output,
        quiet=quiet,
        all_sessions=all_sessions,
    )


@app.command("get")
def get(ctx: typer.Context, session_id: SessionId, output: Output = None, quiet: Quiet = False) -> None:
    """Show one session, with counts of what is in it."""
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_session(session_id), SESSION_VIEW, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    session_id: SessionId,
    purge: Annotated[bool, typer.Option("--purge", help="Delete it and its history instead of closing it.")] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """End a session (it stays readable), or with --purge delete it and everything in it."""
    app_ctx = state(ctx)
    session = app_ctx.client().delete_session(session_id, purge=purge)
    result: Any = session if session is not None else {"session_id": session_id, "status": "purged"}
    render(app_ctx.env, result, SESSION_VIEW, output, quiet)


@app.command("token")
def token(ctx: typer.Context, session_id: SessionId, output: Output = None, quiet: Quiet = False) -> None:
    """Mint a session token: it opens only this session (hand it to a browser page; `-q`
    prints only the token). It ends with the session."""
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().create_session_token(session_id), TOKEN_VIEW, output, quiet)


FORK_VIEW = View(id_field="session.session_id", raw_keys=frozenset({"session.session_token"}))


@app.command("fork")
def fork(
    ctx: typer.Context,
    session_id: SessionId,
    at: Annotated[
        int | None,
        typer.Option("--at", metavar="SEQ", min=0, help="The event seq to fork at (default: now); see `event list`."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name for the fork.")] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Fork a session: a new one with the same engines, tools and handlers, and the engines'
    conversations as they stood right after event SEQ (default: now). The original is not
    touched; `engines` maps each original engine to its copy. `-q` prints the new session id
    (`NEW=$(llmgine session fork ID --at 42 -q)`)."""
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().fork_session(session_id, at_seq=at, name=name), FORK_VIEW, output, quiet)
