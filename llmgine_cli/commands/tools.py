"""`llmgine tool ...` ↔ daemon api/tools.py.

`tool register FILE.py` sends the file as it is: the daemon finds the function (the last one
in the file, or --name), its description and its parameters' JSON Schema by loading the code in
a sandbox worker. The CLI never runs or imports the file.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer

from llmgine_cli import completion
from llmgine_cli.commands import several
from llmgine_cli.commands.args import SessionOpt, parse_object, parse_pairs, read_text
from llmgine_cli.errors import ApiError, api_error
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format, visible_line, visible_text
from llmgine_cli.status import ExitStatus

app = typer.Typer(help="Register Python functions as a session's tools, run them, remove them.", no_args_is_help=True)

TOOL_VIEW = View(id_field="name", raw_keys=frozenset({"function_code"}))
LIST_VIEW = View(
    columns=(
        "NAME=name, PARAMETERS=params, ASYNC=is_async, TIMEOUT=timeout, CREATED=created_at, DESCRIPTION=description"
    ),
    items="tools",
    id_field="name",
)
RESULT_VIEW = View(id_field="call_id")

ToolName = Annotated[str, typer.Argument(metavar="NAME", help="The tool's name.", autocompletion=completion.tool_names)]


def read_source(path: str, param: str = "FILE") -> str:
    """A Python file's text (``-`` = stdin). Only read: the daemon's sandbox loads it."""
    source = read_text(path, param)
    if not source.strip():  # as an empty --data: a usage error (2), not the daemon's 422 (1)
        raise typer.BadParameter(f"{'stdin' if path == '-' else path} is empty: no Python source", param_hint=param)
    return source


def _signature(parameters: dict[str, Any]) -> str:
    """``location: string, days?: integer`` from a JSON Schema object."""
    props = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    parts = []
    for name, spec in props.items():
        kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
        if isinstance(kind, list):
            kind = "|".join(map(str, kind))
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return ", ".join(parts) or "-"


@app.command("register")
def register(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE.py", help="Python source defining the function; - for stdin.")],
    session: SessionOpt,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="The function to register, and the tool's name (default: the last function in the file).",
        ),
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="Default: the docstring's first paragraph.")
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(
            "--params",
            metavar="JSON",
            help="Parameters as {name: {type, description}} or a JSON Schema "
            "(default: from the type hints and the docstring).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS", min=0.001, help="Deadline per call (default: sandbox.deadline)."),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a tool of the same name.")] = False,
    requires_approval: Annotated[
        bool,
        typer.Option(
            "--requires-approval", help="A ToolChat engine asks a person before each call (`llmgine approval`)."
        ),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Register a function from FILE.py as a tool of the session (exit 6 if the name is taken;
    --replace replaces it, which makes a setup script safe to re-run).

    Example:

      llmgine tool register weather.py -S demo --replace

      llmgine tool exec get_weather -S demo -a location=Hobart
    """
    app_ctx = state(ctx)
    source = read_source(file)
    parameters = parse_object(params, "--params") if params is not None else None
    try:
        tool = app_ctx.client().register_tool(
            session,
            source,
            name=name,
            description=description,
            parameters=parameters,
            timeout=timeout,
            replace=replace,
            requires_approval=requires_approval,
        )
    except ApiError as exc:
        if exc.code == "CONFLICT" and (exc.details or {}).get("tool_name"):
            # The daemon's message names the HTTP way (?replace=true); here it is an option.
            taken = exc.details["tool_name"]
            raise api_error(
                409, exc.code, f"tool {taken!r} already exists in this session (--replace replaces it)", exc.details
            ) from None
        raise
    data = msgspec.to_builtins(tool)
    if resolve_format(app_ctx.env, output) in ("table", "plain"):
        data.pop("function_code", None)  # the file just sent; `tool get` shows it
    render(app_ctx.env, data, TOOL_VIEW, output, quiet)


@app.command("list")
def list_(ctx: typer.Context, session: SessionOpt, output: Output = None, quiet: Quiet = False) -> None:
    """List the session's tools with their parameters (MCP servers' tools too: NAME.tool).

    Examples:

      llmgine tool list -S demo --format '{{.name}}: {{.description}}'
    """
    app_ctx = state(ctx)
    render_tools(app_ctx.env, app_ctx.client().list_tools(session), output, quiet)


def render_tools(env: Any, page: Any, output: Any, quiet: bool) -> None:
    """A ToolList: in a table, each tool's parameters as a signature (`tool list`, `mcp tools`)."""
    if resolve_format(env, output) in ("table", "plain") and not quiet:
        data = msgspec.to_builtins(page)
        for tool in data["tools"]:
            tool["params"] = _signature(tool["parameters"])
        render(env, data, LIST_VIEW, output, quiet)
        return
    render(env, page, LIST_VIEW, output, quiet)


@app.command("get")
def get(ctx: typer.Context, name: ToolName, session: SessionOpt, output: Output = None, quiet: Quiet = False) -> None:
    """Show one tool: description, parameters (JSON Schema) and its source.

    Examples:

      llmgine tool get get_weather -S demo -o json | jq -r .function_code
    """
    app_ctx = state(ctx)
    tool = app_ctx.client().get_tool(session, name)
    fmt = resolve_format(app_ctx.env, output)
    if fmt in ("table", "plain") and not quiet:
        data = msgspec.to_builtins(tool)
        source = data.pop("function_code", None)
        render(app_ctx.env, data, TOOL_VIEW, output)
        if source:
            # Anybody's text (a session token may register code): escapes shown, not obeyed,
            # as `handler get` shows a handler's source; -o json has it unchanged.
            app_ctx.env.out("")
            app_ctx.env.out(visible_text(source.rstrip("\n")))
        return
    render(app_ctx.env, tool, TOOL_VIEW, output, quiet)


@app.command("exec")
def exec_(
    ctx: typer.Context,
    name: ToolName,
    session: SessionOpt,
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            "-a",
            metavar="KEY=VALUE",
            help="An argument: KEY=string, KEY:=JSON (days:=3), KEY=@FILE. Repeatable.",
        ),
    ] = None,
    args: Annotated[str | None, typer.Option("--args", metavar="JSON", help="All arguments as a JSON object.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="SECONDS", min=0.001, help="Deadline for this call.")
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Run a tool in the sandbox and print its result (exit 1 if it failed).

    Examples:

      llmgine tool exec get_weather -S demo -a location=Hobart

      echo '{"location": "Oslo"}' | llmgine tool exec get_weather -S demo --args -
    """
    app_ctx = state(ctx)
    arguments = {**parse_object(args, "--args"), **parse_pairs(arg, "--arg")}
    from llmgine_cli.progress import spinner

    try:
        with spinner(app_ctx.env, f"{name} running in the sandbox"):
            result = app_ctx.client().execute_tool(session, name, arguments, timeout=timeout)
    except KeyboardInterrupt:
        # Exit 130 as every wait, saying (as `command run` does) what goes on: the daemon does
        # not stop a call whose client went away.
        app_ctx.env.interrupted(
            f"interrupted: the call to {name} goes on in the sandbox until it returns or its "
            "deadline ends it (--timeout, else the tool's timeout or sandbox.deadline)"
        )
        raise typer.Exit(ExitStatus.INTERRUPTED) from None
    data = msgspec.to_builtins(result)
    if resolve_format(app_ctx.env, output) in ("table", "plain") and isinstance(data.get("error"), dict):
        details = data["error"].get("details") or {}
        data["error"] = {**data["error"], "details": {k: v for k, v in details.items() if k != "traceback"}}
    render(app_ctx.env, data, RESULT_VIEW, output, quiet)
    if result.error is not None:
        why = f"{result.error.get('code')}: {result.error.get('message')}"  # user code's: escapes shown
        app_ctx.env.err(visible_line(f"error: tool {name} failed: {why}"))
        raise typer.Exit(ExitStatus.ERROR)


@app.command("delete")
def delete(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME...", help="The tools' names.", autocompletion=completion.tool_names),
    ],
    session: SessionOpt,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Remove tools from the session (exit 4 if one is not there); several in turn, as `docker
    rm` (one that fails is its error line and the exit code; the others still go).

    Examples:

      llmgine tool delete get_weather -S demo

      llmgine tool list -S demo -q | xargs -r llmgine tool delete -S demo
    """
    app_ctx = state(ctx)
    client = app_ctx.client()

    def delete_one(name: str) -> dict[str, Any]:
        client.delete_tool(session, name)
        return {"name": name, "session_id": session}

    # As every delete with no record to show (webhook, schedule, secret, mcp): a line on stderr.
    several.delete_each(app_ctx, names, delete_one, "tool", "tools", "name", output, quiet)
