"""`llmgine mcp add|list|get|remove|tools` ↔ daemon api/mcp.py (bus/mcp_servers.py).

An MCP tool server belongs to a session (``--session``) or, without one, to every session
(global). Its tools are the session's tools ``NAME.tool``: `llmgine tool list|exec` and
ToolChat engines use them like registered tools.

    llmgine mcp add files -- npx -y @modelcontextprotocol/server-filesystem /srv/docs
    llmgine mcp add web --url http://127.0.0.1:8000/mcp --session S
    llmgine mcp add gh --env GITHUB_TOKEN=secret:GITHUB_TOKEN -- /opt/gh-mcp/bin/server
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import typer

from llmgine_cli import completion
from llmgine_cli.commands import several
from llmgine_cli.commands.args import session_callback
from llmgine_cli.commands.tools import render_tools
from llmgine_cli.errors import ApiError, api_error
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format, visible_line
from llmgine_cli.status import ExitStatus

app = typer.Typer(
    help="MCP tool servers: their tools become a session's tools (NAME.tool). Add, list, remove.",
    no_args_is_help=True,
)
SERVER_VIEW = View(id_field="name")
LIST_VIEW = View(
    columns=(
        "NAME=name, SCOPE=scope, TRANSPORT=transport, STATUS=status, RESTARTS=restarts, TOOLS=tool_count, "
        "SKIPPED=tools_skipped, ERROR=last_error"
    ),
    items="servers",
    id_field="name",
    empty="no MCP servers",
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The server's name: a letter, then letters, digits, _.")]
Session = Annotated[
    str | None,
    typer.Option(
        "--session",
        "-S",
        callback=session_callback,
        metavar="ID",
        show_default=False,
        autocompletion=completion.session_ids,
        help="The session the server belongs to (default: global, every session sees it).",
    ),
]


@contextlib.contextmanager
def _taken_says_replace(name: str) -> Iterator[None]:
    """The daemon's 409 says "remove it first"; here --replace does it in one step."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 409 and exc.details.get("name") == name:
            raise api_error(409, exc.code, f"MCP server {name!r} already exists here (--replace replaces it)") from None
        raise


@app.command("add")
def add(
    ctx: typer.Context,
    name: Name,
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- COMMAND ARGS...]", help="A stdio server: the program and its arguments."),
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="A streamable-HTTP server's endpoint.")] = None,
    session: Session = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            metavar="KEY=VALUE",
            help="An environment variable of the server; VALUE may be secret:NAME (llmgine secret). Repeatable.",
        ),
    ] = None,
    trusted: Annotated[
        bool, typer.Option("--trusted", help="Run it outside the sandbox, with the network (API keys only).")
    ] = False,
    mount: Annotated[
        list[str] | None,
        typer.Option("--mount", metavar="PATH", help="A path the sandboxed server may read. Repeatable."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS", min=0.001, help="Deadline per tool call (mcp.call_timeout)."),
    ] = None,
    requires_approval: Annotated[
        bool,
        typer.Option("--requires-approval", help="A ToolChat engine asks a person before running its tools."),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Replace a server of that name (its process is stopped), as tools' --replace."),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Add an MCP server: `-- COMMAND ARGS...` (stdio) or --url (streamable HTTP).

    A stdio server runs in the sandbox (unless --trusted) and is restarted if it exits. The
    answer comes once it is connected, or says why not (status, last_error); exit 6 if the
    name is taken (--replace replaces it). Put `--` before the command so its own options are
    not read as ours.

    Examples:

      llmgine mcp add calc -S demo --replace -- python3 calc.py

      llmgine mcp add docs --url http://127.0.0.1:9000/mcp --replace
    """
    if bool(command) == bool(url):
        raise typer.BadParameter("give either -- COMMAND ARGS... or --url URL", param_hint="COMMAND")
    variables: dict[str, str] = {}
    for pair in env or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        variables[key] = value
    app_ctx = state(ctx)
    from llmgine_cli.progress import spinner

    try:
        with spinner(app_ctx.env, f"starting MCP server {name}"), _taken_says_replace(name):
            server = app_ctx.client().register_mcp_server(
                session,
                name,
                command=command[0] if command else None,
                args=command[1:] if command else (),
                url=url,
                env=variables,
                trusted=trusted,
                mounts=mount or (),
                timeout=timeout,
                requires_approval=requires_approval,
                replace=replace,
            )
    except KeyboardInterrupt:
        # The daemon keeps a server it was sent and goes on starting it: said, or the same
        # `mcp add` again is exit 6 (name taken) for a server the user thinks was never added.
        app_ctx.env.interrupted(
            f"interrupted: the daemon goes on starting MCP server {name} if it was sent "
            f"(`llmgine mcp list` shows it, `llmgine mcp remove {name}` removes it)"
        )
        raise typer.Exit(ExitStatus.INTERRUPTED) from None
    render(app_ctx.env, server, SERVER_VIEW, output, quiet)
    if server.status != "running":  # registered, but its tools are not there (yet): say so
        why = f": {visible_line(server.last_error)}" if server.last_error else ""
        said = "failed" if server.status == "failed" else f"is {server.status}"  # not "is failed"
        app_ctx.env.err(f"MCP server {name} {said}{why}; it is kept and retried (`llmgine mcp list` shows its state)")


@app.command("list")
def list_(ctx: typer.Context, session: Session = None, output: Output = None, quiet: Quiet = False) -> None:
    """List the global MCP servers, or a session's (--session).

    Examples:

      llmgine mcp list -S demo

      llmgine mcp list -q
    """
    app_ctx = state(ctx)
    page = app_ctx.client().list_mcp_servers(session)
    if resolve_format(app_ctx.env, output) in ("table", "plain") and not quiet:
        data = msgspec.to_builtins(page)
        for server in data["servers"]:
            server["tool_count"] = len(server["tools"])
            server["last_error"] = (server["last_error"] or "")[:40]
        render(app_ctx.env, data, LIST_VIEW, output, quiet)
        return
    render(app_ctx.env, page, LIST_VIEW, output, quiet)


@app.command("get")
def get(ctx: typer.Context, name: Name, session: Session = None, output: Output = None, quiet: Quiet = False) -> None:
    """Show one server: how it runs, its status, restarts, last error and tools.

    Examples:

      llmgine mcp get calc -S demo -o json | jq -r .status
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_mcp_server(session, name), SERVER_VIEW, output, quiet)


@app.command("tools")
def tools(ctx: typer.Context, name: Name, session: Session = None, output: Output = None, quiet: Quiet = False) -> None:
    """List a server's tools (call them with `llmgine tool exec NAME.tool`).

    Examples:

      llmgine mcp tools calc -S demo

      llmgine tool exec calc.add -S demo -a a:=1 -a b:=2
    """
    app_ctx = state(ctx)
    render_tools(app_ctx.env, app_ctx.client().mcp_server_tools(session, name), output, quiet)


@app.command("remove")
def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The servers' names.")],
    session: Session = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Remove servers and stop their processes (exit 4 if one is not there); several in turn,
    as `docker rm` (one that fails is its error line and the exit code; the others still go).

    Examples:

      llmgine mcp remove calc -S demo

      llmgine mcp list -S demo -q | xargs -r llmgine mcp remove -S demo
    """
    app_ctx = state(ctx)
    client = app_ctx.client()

    def remove_one(name: str) -> dict[str, Any]:
        client.delete_mcp_server(session, name)
        return {"name": name, "session_id": session}

    several.delete_each(app_ctx, names, remove_one, "MCP server", "servers", "name", output, quiet, verb="removed")
