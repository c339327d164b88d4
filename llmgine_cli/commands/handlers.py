"""`llmgine handler ...` ↔ daemon api/handlers.py.

Handlers live in a session (``--session``/``LLMGINE_SESSION``) or in the global scope
(``--global``, seen by every session; a session's command handler overrides a global one).
FILE.py is sent as it is; the handler is its last function, found by the daemon's sandbox.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from llmgine_cli import completion
from llmgine_cli.commands.args import session_callback
from llmgine_cli.commands.tools import read_source
from llmgine_cli.errors import ApiError, api_error
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, render_deleted

app = typer.Typer(help="Add, list and delete command and event handlers written in Python.", no_args_is_help=True)
add_app = typer.Typer(help="Add a command or an event handler from a Python file.", no_args_is_help=True)
app.add_typer(add_app, name="add")

HANDLER_VIEW = View(id_field="handler_id", raw_keys=frozenset({"handler_function"}))
LIST_VIEW = View(
    columns=(
        "ID=handler_id, KIND=kind, TYPE=type, SCOPE=scope, FUNCTION=function, PRIORITY=priority, TIMEOUT=timeout, "
        "CREATED=created_at"
    ),
    items="handlers",
    id_field="handler_id",
)


class Kind(StrEnum):
    command = "command"
    event = "event"


Session = Annotated[
    str | None,
    typer.Option(
        "--session",
        "-S",
        callback=session_callback,
        envvar="LLMGINE_SESSION",
        metavar="ID",
        show_default=False,
        autocompletion=completion.session_ids,
        help="The session (default: LLMGINE_SESSION).",
    ),
]
Global = Annotated[bool, typer.Option("--global", "-g", help="The global scope instead of a session.")]
File = Annotated[
    str, typer.Argument(metavar="FILE.py", help="Python source; its last function is the handler; - for stdin.")
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        help="Deadline per run (default: the command's timeout, else sandbox.deadline).",
    ),
]
Replace = Annotated[
    bool,
    typer.Option("--replace", help="Replace the scope's handler(s) of TYPE instead of adding one (safe to re-run)."),
]


def scope(session: str | None, global_: bool) -> str | None:
    """The session id, or None for the global scope; one of the two is required."""
    if global_:
        return None
    if not session:
        raise typer.BadParameter("give --session ID (or LLMGINE_SESSION), or --global", param_hint="--session")
    return session


@add_app.command("command")
def add_command(
    ctx: typer.Context,
    command_type: Annotated[str, typer.Argument(metavar="TYPE", help="The command type it handles.")],
    file: File,
    session: Session = None,
    global_: Global = False,
    timeout: Timeout = None,
    replace: Replace = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Handle commands of TYPE with a Python function: it gets the command, returns the result
    (exit 6 if the scope already has a handler for TYPE; --replace replaces it, in one step).

    Examples:

      llmgine handler add command Greet greet.py -S demo --replace

      llmgine command run Greet -S demo -p name=Ada
    """
    app_ctx = state(ctx)
    try:
        handler = app_ctx.client().register_command_handler(
            scope(session, global_), command_type, read_source(file), timeout=timeout, replace=replace
        )
    except ApiError as exc:
        owner = str(exc.details.get("owner") or "handler:")  # not a user handler's: an engine's
        if exc.status == 409 and exc.code == "CONFLICT" and not replace and owner.startswith("handler:"):
            raise api_error(409, exc.code, f"{exc.message} (--replace replaces it)", exc.details) from None
        if exc.status == 409 and owner.startswith("engine:"):
            hint = f"by engine {owner[7:]}: --replace never replaces an engine's; `llmgine engine delete` frees it"
            raise api_error(409, exc.code, f"{exc.message} ({hint})", exc.details) from None
        raise
    render(app_ctx.env, handler, HANDLER_VIEW, output, quiet)


@add_app.command("event")
def add_event(
    ctx: typer.Context,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="The event type, or '*' for every event.", autocompletion=completion.event_types
        ),
    ],
    file: File,
    session: Session = None,
    global_: Global = False,
    priority: Annotated[
        int, typer.Option("--priority", "-p", min=-(2**31), max=2**31 - 1, help="Lower runs first.")
    ] = 100,
    timeout: Timeout = None,
    replace: Replace = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Run a Python function after each event of TYPE is stored. A type may have several
    handlers: each add is one more, unless --replace (the scope's handlers of TYPE go, in the
    same step), which makes a setup script safe to re-run.

    Example (after each command of the session ends):

      llmgine handler add event CommandResult notify.py -S demo --replace
    """
    app_ctx = state(ctx)
    handler = app_ctx.client().register_event_handler(
        scope(session, global_), event_type, read_source(file), priority=priority, timeout=timeout, replace=replace
    )
    render(app_ctx.env, handler, HANDLER_VIEW, output, quiet)


@app.command("list")
def list_(
    ctx: typer.Context,
    session: Session = None,
    global_: Global = False,
    kind: Annotated[Kind | None, typer.Option("--kind", "-k", help="command or event.")] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List a session's handlers, or the global ones.

    Examples:

      llmgine handler list -S demo

      llmgine handler list --global --kind event -q
    """
    app_ctx = state(ctx)
    page = app_ctx.client().list_handlers(scope(session, global_), kind=kind.value if kind else None)
    render(app_ctx.env, page, LIST_VIEW, output, quiet)


@app.command("get")
def get(
    ctx: typer.Context,
    handler_id: Annotated[
        str, typer.Argument(metavar="ID", help="The handler: its id, a unique prefix or its short id.")
    ],
    session: Session = None,
    global_: Global = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show one handler with its source.

    Examples:

      H=$(llmgine handler add command Greet greet.py -S demo --replace -q)

      llmgine handler get "$H" -S demo -o json | jq -r .handler_function
    """
    app_ctx = state(ctx)
    where = scope(session, global_)
    from llmgine_cli.hot import resolve_id
    from llmgine_cli.ids import Ambiguous

    path = "/api/handlers" if where is None else f"/api/sessions/{where}/handlers"
    try:
        handler_id = resolve_id(app_ctx, "handler", handler_id, path, "handlers", "handler_id", paged=False)
    except Ambiguous as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from None
    handler = app_ctx.client().get_handler(where, handler_id)
    render(app_ctx.env, handler, HANDLER_VIEW, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    kind: Annotated[Kind, typer.Argument(metavar="command|event", help="Which kind of handler.")],
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="The command or event type.")],
    session: Session = None,
    global_: Global = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Remove the scope's handler(s) of TYPE: the command handler, or every event handler of it
    (exit 4 if there is none).

    Examples:

      llmgine handler delete command Greet -S demo
    """
    app_ctx = state(ctx)
    where = scope(session, global_)
    app_ctx.client().delete_handlers(where, kind.value, type_)
    record = {"kind": kind.value, "type": type_, "scope": "global" if where is None else "session", "session_id": where}
    whose = "global" if where is None else "session's"
    message = f"deleted the {whose} {kind.value} handler{'(s)' if kind.value == 'event' else ''} of {type_}"
    render_deleted(app_ctx.env, record, message, output, quiet, "type")
