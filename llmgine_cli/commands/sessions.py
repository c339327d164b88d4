"""`llmgine session ...` ↔ daemon api/sessions.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from llmgine_cli import completion, hot
from llmgine_cli.commands import several
from llmgine_cli.commands.args import choices, parse_pairs, session_callback
from llmgine_cli.confirm import Yes, confirm
from llmgine_cli.errors import ApiError, api_error
from llmgine_cli.ids import short_id
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(help="Create, list, inspect and end sessions.", no_args_is_help=True)

LIST_VIEW = hot.SESSION_LIST_VIEW
SESSION_VIEW = hot.SESSION_VIEW
ENDED_VIEW = View(columns="ID=session_id, NAME=name, STATUS=status", items="sessions", id_field="session_id")
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
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="A name for it (not blank, at most 256 characters), unique among the active sessions "
            "(-S NAME finds it).",
        ),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Metadata: KEY=string or KEY:=JSON; repeatable."),
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="If an active session already has --name, print it instead of failing (its "
            "--meta is left as it is; no session token is minted: `llmgine session token`).",
        ),
    ] = False,
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate",
            help="Create another session even if an active one has --name (`-S NAME` is then ambiguous).",
        ),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Create a session (`SID=$(llmgine session create -q)`).

    A name already taken by an active session is an error (exit 6), as `docker create --name`
    does, so `-S NAME` never becomes ambiguous. With --reuse that session is printed instead
    (exit 0), which makes a setup script safe to re-run:
    `SID=$(llmgine session create -n build --reuse -q)`.

    Examples:

      SID=$(llmgine session create --name build --reuse -q)

      llmgine session create --meta team=ml -o json | jq -r .session_token
    """
    app_ctx = state(ctx)
    _check_name(name)
    if (reuse or allow_duplicate) and not name:
        flag = "--reuse" if reuse else "--allow-duplicate"
        raise typer.BadParameter(f"{flag} needs --name", param_hint=flag)
    if reuse and allow_duplicate:
        raise typer.BadParameter("give --reuse or --allow-duplicate, not both", param_hint="--reuse")
    if_exists = None if not name or allow_duplicate else "reuse" if reuse else "error"
    with _name_taken(name, "--reuse prints it, "):
        session = app_ctx.client().create_session(name, parse_pairs(meta, "--meta"), if_exists=if_exists)
    render(app_ctx.env, session, SESSION_VIEW, output, quiet)


def _check_name(name: str | None) -> None:
    """`--name ""` (a variable left unset) or only spaces: a usage error, as the daemon refuses
    such a name (422, protocol/grammar.py's SessionName); it made a session named "" here."""
    if name is not None and not name.strip():
        raise typer.BadParameter(
            "the name is empty or only whitespace (leave --name out for a session without one)", param_hint="--name"
        )


@contextlib.contextmanager
def _name_taken(name: str | None, reuse: str = "") -> Iterator[None]:
    """The daemon's 409 for a name an active session has, with the ways out here."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 409 and exc.code == "CONFLICT" and name is not None and exc.details.get("name") == name:
            taken = exc.details.get("session_id")
            raise api_error(
                409,
                exc.code,
                f"an active session is already named {name!r} ({taken}): {reuse}--allow-duplicate takes the "
                "name anyway, or end that session first (`llmgine session delete`)",
                exc.details,
            ) from None
        raise


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
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many (1-1000).")
    ] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List the active sessions, newest first (--all: closed ones too).

    Examples:

      llmgine session list --all --format '{{.session_id}}\\t{{.name}}'

      llmgine session list -q | xargs -r llmgine session delete -q
    """
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
    """Show one session, with counts of what is in it.

    Example:

      llmgine session get demo --format '{{.status}} {{.counts.commands}}'
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_session(session_id), SESSION_VIEW, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID...",
            help="The sessions: each its id, a unique prefix, its short id or its name.",
            autocompletion=completion.session_ids,
            callback=lambda ctx, param, values: [session_callback(ctx, param, v) for v in values or ()],
        ),
    ],
    purge: Annotated[bool, typer.Option("--purge", help="Delete it and its history instead of closing it.")] = False,
    yes: Yes = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """End a session (it stays readable), or with --purge delete it and everything in it.

    Several IDs (`llmgine session list -q | xargs -r llmgine session delete -q`) are ended in turn,
    as `docker rm` removes containers: one that fails is an error line and the exit code of
    the first failure, and the others are still ended; the ended ones are listed.

    --purge asks first on a terminal (y/N; --yes does not ask); a script is never asked.

    Examples:

      SID=$(llmgine session create -q)

      llmgine session delete "$SID" --purge --yes
    """
    app_ctx = state(ctx)
    if purge:
        shown = ", ".join(short_id(s) for s in session_ids[:5]) + (", ..." if len(session_ids) > 5 else "")
        what = "session" if len(session_ids) == 1 else f"{len(session_ids)} sessions"
        confirm(app_ctx, f"Purge {what} {shown} and everything in {'it' if len(session_ids) == 1 else 'them'}?", yes)
    client = app_ctx.client()

    def end(session_id: str) -> Any:
        session = client.delete_session(session_id, purge=purge)
        return session if session is not None else {"session_id": session_id, "status": "purged"}

    several.show_each(app_ctx, session_ids, end, SESSION_VIEW, "sessions", ENDED_VIEW, output, quiet)


@app.command("token")
def token(ctx: typer.Context, session_id: SessionId, output: Output = None, quiet: Quiet = False) -> None:
    """Mint a session token: it opens only this session (hand it to a browser page; `-q`
    prints only the token). It ends with the session.

    Examples:

      TOKEN=$(llmgine session token demo -q)
    """
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
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="A name for the fork; one an active session has is exit 6, as for create."),
    ] = None,
    allow_duplicate: Annotated[
        bool, typer.Option("--allow-duplicate", help="Take --name even if an active session has it.")
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Fork a session: a new one with the same engines, tools and handlers, and the engines'
    conversations as they stood right after event SEQ (default: now). The original is not
    touched; `engines` maps each original engine to its copy. `-q` prints the new session id
    (`NEW=$(llmgine session fork ID --at 42 -q)`).

    Examples:

      NEW=$(llmgine session fork demo -q)

      llmgine session fork demo -o json | jq .engines
    """
    app_ctx = state(ctx)
    _check_name(name)
    if_exists = "error" if name and not allow_duplicate else None
    with _name_taken(name):
        fork = app_ctx.client().fork_session(session_id, at_seq=at, name=name, if_exists=if_exists)
    render(app_ctx.env, fork, FORK_VIEW, output, quiet)
