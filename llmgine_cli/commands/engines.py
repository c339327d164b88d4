"""`llmgine engine ...` ↔ daemon api/engines.py."""

from __future__ import annotations

import functools
import os
from typing import Annotated

import msgspec
import typer
from llmgine_daemon.protocol import TERMINAL_STATUSES

from llmgine_cli import completion, hot
from llmgine_cli.commands import several
from llmgine_cli.commands.args import (
    SessionOpt,
    choices,
    command_metadata,
    id_argument,
    parse_pairs,
    session_filter_callback,
    stdin_argument,
)
from llmgine_cli.commands.commands import CancelOnInterrupt, NoWait, Priority, Timeout, finish_command
from llmgine_cli.errors import ApiError, api_error
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, cut_note, render

app = typer.Typer(
    help="Create engines in sessions, run prompts on them, read or reset their conversations, delete them.",
    no_args_is_help=True,
)

ENGINE_VIEW = View(id_field="engine_id")
LIST_VIEW = View(
    columns="ID=engine_id, TYPE=engine_type, MODEL=model_name, STATUS=status, SESSION=session_id, CREATED=created_at",
    items="engines",
    id_field="engine_id",
)
TYPES_VIEW = View(
    columns="TYPE=engine_type, HANDLES=command_type, CONFIGURATION=fields, DESCRIPTION=description",
    items="types",
    id_field="engine_type",
)

MESSAGES_VIEW = View(
    columns="#=message_id, ROLE=role, CONTENT=content, TOOL CALLS=tool_calls, CREATED=created_at",
    items="messages",
    id_field="message_id",
)

EngineId = Annotated[
    str,
    id_argument("engine", "/api/engines", "engines", "engine_id", autocompletion=completion.engine_ids),
]


@app.command("types")
def types(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """List the engine types and their configuration fields.

    Examples:

      llmgine engine types -q

      llmgine engine types -o json | jq '.types[].configuration'
    """
    app_ctx = state(ctx)
    data = msgspec.to_builtins(app_ctx.client().engine_types())
    for t in data["types"]:
        t["fields"] = [f"{f['name']}:{f['type']}={f['default']}" for f in t["configuration"]]
    render(app_ctx.env, data, TYPES_VIEW, output, quiet)


@app.command("create")
def create(
    ctx: typer.Context,
    engine_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="The engine type, e.g. DummyEngine.", autocompletion=completion.engine_types
        ),
    ],
    session: SessionOpt,
    model: Annotated[str | None, typer.Option("--model", "-M", help="The model name.")] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            metavar="KEY=VALUE",
            help="A configuration field (see `engine types`): KEY=string or KEY:=JSON (temperature:=0.2). Repeatable.",
        ),
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="If the session already has an engine of TYPE with this --model and --config, print it "
            "instead of failing (exit 6): a setup script can run again.",
        ),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Create an engine in a session; it handles its type's commands there. A session has one
    engine of each type: a second is exit 6, unless --reuse finds the same one.

    Examples:

      EID=$(llmgine engine create DummyEngine -S demo --reuse -q)

      llmgine engine create SinglePassEngine -S demo --reuse -o json
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    configuration = parse_pairs(config, "--config")
    try:
        engine = client.create_engine(engine_type, session, model, configuration)
    except ApiError as exc:
        available = exc.details.get("available")
        if exc.status == 422 and exc.details.get("field") == "engine_type" and isinstance(available, list):
            # "unknown engine type 'Nope'" named none of the types there are (they were in details)
            message = f"unknown engine type {engine_type!r}: one of {', '.join(map(str, available))}"
            raise api_error(exc.status, exc.code, message, {}, exc.request_id) from None
        if exc.status != 409:
            raise
        if reuse:
            for found in client.list_engines(session_id=session, status="active", limit=100).engines:
                same = (found.model_name, found.configuration or {}) == (model, configuration)
                if found.engine_type == engine_type and same:
                    render(app_ctx.env, found, ENGINE_VIEW, output, quiet)
                    return
        # "a handler for 'DummyEngineCommand' is already registered": said of an engine here
        from llmgine_cli.conversation import type_taken

        use = "use it (llmgine engine exec {id} PROMPT)"
        if reuse:
            use = "--reuse takes only one of the same --model and --config; " + use
        raise type_taken(client, session, engine_type, exc, use) from None
    render(app_ctx.env, engine, ENGINE_VIEW, output, quiet)


@app.command("list")
def list_(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-S",
            callback=session_filter_callback,
            metavar="ID",
            help="Only this session's engines.",
            autocompletion=completion.session_ids,
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="active (not stopped), initialized or stopped.",
            callback=choices("active", "initialized", "stopped"),
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many.")
    ] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """List engines, newest first.

    Example:

      llmgine engine list -S demo --format '{{.engine_type}} {{.model_name}}'
    """
    app_ctx = state(ctx)
    page = app_ctx.client().list_engines(session_id=session, status=status, limit=limit, offset=offset)
    render(app_ctx.env, page, LIST_VIEW, output, quiet)
    cut_note(app_ctx.env, output, quiet, page.total, offset, len(page.engines))


@app.command("get")
def get(ctx: typer.Context, engine_id: EngineId, output: Output = None, quiet: Quiet = False) -> None:
    """Show one engine.

    Examples:

      EID=$(llmgine engine create DummyEngine -S demo --reuse -q)

      llmgine engine get "$EID" --format '{{.engine_type}} {{.status}}'
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_engine(engine_id), ENGINE_VIEW, output, quiet)


@app.command("exec")
def exec_(
    ctx: typer.Context,
    engine_id: EngineId,
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt (-: read it from stdin, as `ask`).")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A parameter: KEY=string or KEY:=JSON; repeatable."),
    ] = None,
    priority: Priority = None,
    timeout: Timeout = None,
    no_wait: NoWait = False,
    cancel_on_interrupt: CancelOnInterrupt = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Run a prompt on an engine (a command in its session) and print the result.

    Examples:

      EID=$(llmgine engine create DummyEngine -S demo --reuse -q)

      llmgine engine exec "$EID" Hello -o json | jq -r .result.response

      echo Hello | llmgine engine exec "$EID" -
    """
    app_ctx = state(ctx)
    if prompt == "-":  # as `llmgine ask -`: `cat prompt.txt | llmgine engine exec ID -` sent "-"
        prompt = stdin_argument("PROMPT", "the prompt")
    # With an idempotency key, so that a Ctrl-C before the daemon's answer arrived sends the
    # same request again, which answers the command already stored (never a second one): its
    # id is then named as when Ctrl-C comes while waiting.
    submit = functools.partial(
        app_ctx.client().execute_engine,
        engine_id,
        prompt,
        parse_pairs(param, "--param"),
        command_metadata(priority.value if priority else None, timeout),
        idempotency_key=os.urandom(16).hex(),
    )
    try:
        record = submit()
    except KeyboardInterrupt:
        record = submit()
        if record.status not in TERMINAL_STATUSES and not no_wait:
            raise typer.Exit(
                hot.interrupted(app_ctx, msgspec.to_builtins(record), cancel=cancel_on_interrupt)
            ) from None
    # Stored at once, then waited for as `command run` waits: a spinner, and on Ctrl-C the
    # command's id and how to stop it (the first request held the answer: Ctrl-C said nothing).
    finish_command(
        app_ctx, record, no_wait=no_wait, output=output, quiet=quiet, cancel_on_interrupt=cancel_on_interrupt
    )


@app.command("delete")
def delete(
    ctx: typer.Context,
    engine_ids: Annotated[list[str], several.ids_argument("engine", completion.engine_ids)],
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Stop engines and unregister their handlers; several in turn, as `docker rm` (one that
    fails is its error line and the exit code; the others still go).

    Examples:

      EID=$(llmgine engine create DummyEngine -S demo --reuse -q)

      llmgine engine delete "$EID"

      llmgine engine list -S demo -q | xargs -r llmgine engine delete -q
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    resolve = several.resolver(app_ctx, "engine", "/api/engines", "engines", "engine_id")

    def delete_one(given: str) -> object:
        return client.delete_engine(resolve(given))

    several.show_each(app_ctx, engine_ids, delete_one, ENGINE_VIEW, "engines", LIST_VIEW, output, quiet)


@app.command("messages")
def messages(
    ctx: typer.Context,
    engine_id: EngineId,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many.")
    ] = 100,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip this many.")] = 0,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Show an LLM engine's conversation (its stored memory), oldest first.

    Tool calls and tool results are messages too; -o json gives every field (tool_call_id,
    partial answers, errors).

    Examples:

      EID=$(llmgine engine create SinglePassEngine -S demo --reuse -q)

      llmgine engine messages "$EID" -o jsonl | jq -r .content
    """
    app_ctx = state(ctx)
    page = app_ctx.client().engine_messages(engine_id, limit=limit, offset=offset)
    render(app_ctx.env, page, MESSAGES_VIEW, output, quiet)


@app.command("reset")
def reset(ctx: typer.Context, engine_id: EngineId, output: Output = None, quiet: Quiet = False) -> None:
    """Forget an LLM engine's conversation (it stays, with its configuration).

    Examples:

      EID=$(llmgine engine create SinglePassEngine -S demo --reuse -q)

      llmgine engine reset "$EID"
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().reset_engine(engine_id), ENGINE_VIEW, output, quiet)
