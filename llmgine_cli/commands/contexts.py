"""`llmgine context ...`: named daemons, as `docker context` (llmgine_cli/contexts.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from llmgine_cli import contexts
from llmgine_cli.commands import several
from llmgine_cli.errors import api_error
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render
from llmgine_cli.target import parse_url

app = typer.Typer(
    help="Named daemons, as `docker context`: add one (URL, API key), use it, list, remove.",
    no_args_is_help=True,
)

Name = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The context's name (`default`: the local daemon).",
        autocompletion=contexts.complete_names,
    ),
]
LIST_VIEW = View(columns="NAME=name, CURRENT=current, URL=url, API KEY=api_key", items="contexts", id_field="name")


def _check_name(name: str) -> str:
    if not name or name == contexts.DEFAULT or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
        raise typer.BadParameter(
            f"{name!r}: letters, digits, - _ and . (at most 64; `default` is the local daemon)", param_hint="NAME"
        )
    return name


@app.command("add")
def add(
    ctx: typer.Context,
    name: Name,
    url: Annotated[str, typer.Option("--url", metavar="URL", help="unix:///path or http://host:port.")],
    api_key_stdin: Annotated[
        bool, typer.Option("--api-key-stdin", help="Read its API key from stdin (never an argument).")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a context of that name.")] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Add a named daemon (exit 6 if the name is taken; --replace replaces it).

    Examples:

      llmgine context add prod --url http://db1:8000 --api-key-stdin < key.txt

      llmgine context add local --url http://127.0.0.1:8000 --replace
    """
    app_ctx = state(ctx)
    env = app_ctx.env.environ
    _check_name(name)
    target = parse_url(url)  # a bad URL is a usage error here, not at its first use
    key = None
    if api_key_stdin:
        from llmgine_cli.commands.args import hidden_input

        key = hidden_input(f"API key for {name}", "--api-key-stdin").strip() or None
        if key is None:
            raise typer.BadParameter("the API key on stdin is empty", param_hint="--api-key-stdin")
    with contexts.editing(env) as data:
        if name in data["contexts"] and not replace:
            app_ctx.env.err(f"error: CONFLICT: context {name!r} exists (--replace replaces it)")
            raise typer.Exit(6)
        data["contexts"][name] = {"url": target.url, "api_key": key}
    path = contexts.contexts_path(env)
    render(app_ctx.env, _row(name, data), View(id_field="name"), output, quiet)
    if not quiet:
        app_ctx.env.err(f"saved in {path}; `llmgine context use {name}` makes it the default")


def _row(name: str, data: dict[str, object]) -> dict[str, object]:
    found = data["contexts"].get(name, {})  # type: ignore[attr-defined]
    return {
        "name": name,
        "current": name == (data.get("current") or contexts.DEFAULT),
        # null for the local daemon and for no key (a table shows "-"): -o json is for scripts.
        "url": found.get("url"),
        "api_key": "set" if found.get("api_key") else None,
    }


@app.command("list")
def list_(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """List the contexts; CURRENT marks the one in use (`default`: the local daemon).

    Examples:

      llmgine context ls

      llmgine context ls -q
    """
    app_ctx = state(ctx)
    data = contexts.load(app_ctx.env.environ)
    names = [contexts.DEFAULT, *sorted(data["contexts"])]
    render(app_ctx.env, {"contexts": [_row(n, data) for n in names]}, LIST_VIEW, output, quiet)


@app.command("use")
def use(ctx: typer.Context, name: Name, output: Output = None, quiet: Quiet = False) -> None:
    """Make NAME the daemon every command talks to (`default`: the local one again).

    --url, LLMGINE_URL, --context and LLMGINE_CONTEXT still win for one command.

    Examples:

      llmgine context add prod --url http://db1:8000 --replace

      llmgine context use prod

      llmgine context use default
    """
    app_ctx = state(ctx)
    env = app_ctx.env.environ
    with contexts.editing(env) as data:
        if name != contexts.DEFAULT and name not in data["contexts"]:
            app_ctx.env.err(f"error: NOT_FOUND: no context {name!r}: `llmgine context ls` lists them")
            raise typer.Exit(4)
        data["current"] = None if name == contexts.DEFAULT else name
    render(app_ctx.env, _row(name, data), View(id_field="name"), output, quiet)


@app.command("show")
def show(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """The context in force for this command (LLMGINE_CONTEXT, else the one in use).

    Examples:

      llmgine context show

      llmgine --context default context show -o json
    """
    app_ctx = state(ctx)
    env = app_ctx.env.environ
    chosen = contexts.selected(env)
    data = contexts.load(env)
    render(app_ctx.env, _row(chosen[0] if chosen else contexts.DEFAULT, data), View(id_field="name"), output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME...", help="The contexts' names.", autocompletion=contexts.complete_names),
    ],
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Remove contexts (exit 4 if one is not there); several in turn, as `docker context rm`
    (one that fails is its error line and the exit code; the others still go). Removing the
    one in use: `default` is used again.

    Examples:

      llmgine context add prod --url http://db1:8000 --replace

      llmgine context delete prod
    """
    app_ctx = state(ctx)
    env = app_ctx.env.environ

    def delete_one(name: str) -> dict[str, str]:
        with contexts.editing(env) as data:
            if name not in data["contexts"]:
                raise api_error(404, "NOT_FOUND", f"no context {name!r}: `llmgine context ls` lists them")
            del data["contexts"][name]
            if data.get("current") == name:
                data["current"] = None
        return {"name": name}

    several.delete_each(app_ctx, names, delete_one, "context", "contexts", "name", output, quiet, verb="removed")
