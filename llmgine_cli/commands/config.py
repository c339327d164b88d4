"""`llmgine config path | show | get | set | unset` ↔ daemon api/system.py (GET /api/config).

`show` and `get` ask the running daemon for its effective configuration (what it actually
uses, flags included); `--local` resolves defaults < file < environment here instead, with
the daemon's own settings code, so it works without a daemon. `set` and `unset` edit the config
file in its format (TOML, or YAML for a .yaml/.yml name) and keep every other key and table
(comments are not kept: a file that had some is first copied to <name>.bak); the daemon reads
it at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from llmgine_daemon.protocol import ConfigValue, ConfigView
from llmgine_daemon.settings import (
    BY_ENV,
    BY_KEY,
    SETTINGS,
    ConfigError,
    commented_backup,
    get_paths,
    has_comments,
    load_settings,
    parse_cli_value,
    write_config_value,
)

from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, render_text, resolve_format

app = typer.Typer(help="Show and edit the configuration (config.toml).", no_args_is_help=True)

SHOW_VIEW = View(
    # The value before the environment variable's name: at 80 columns ENV is left out, not VALUE.
    columns="KEY=key, VALUE=value, SOURCE=source, ENV=env",
    items="settings",
    id_field="key",
)
VALUE_VIEW = View(id_field="value", raw_keys=frozenset({"value"}))

Local = Annotated[
    bool,
    typer.Option("--local", help="Resolve here (defaults < file < env) instead of asking the running daemon."),
]
Key = Annotated[
    str, typer.Argument(metavar="KEY", help="A dotted key (server.port) or its environment name (API_PORT).")
]


def config_path(env: Mapping[str, str]) -> Path:
    """The file llmgined reads by default (LLMGINE_CONFIG moves it, like --config)."""
    return Path(env.get("LLMGINE_CONFIG") or get_paths(env).config_file).expanduser()


def local_view(env: Mapping[str, str]) -> ConfigView:
    settings = load_settings(env=env)
    return ConfigView(
        config_file=str(settings.config_file),
        settings=[ConfigValue(s.key, s.env, settings.redacted(s.key), settings.sources[s.key]) for s in SETTINGS],
    )


def canonical_key(key: str) -> str:
    if key in BY_KEY:
        return key
    if key.upper() in BY_ENV:
        return BY_ENV[key.upper()].key
    raise typer.BadParameter(f"unknown key {key!r}: `llmgine config show --local` lists them", param_hint="KEY")


def value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        # As `config set` and the environment take it (LLMGINE_PRICES={"gpt-4o": [2.5, 10]}),
        # not Python's repr.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _running(app_ctx: Any, verb: str) -> ConfigView:
    """The running daemon's configuration; not running: exit 3 naming --local, which reads
    the file and environment here (the error named only `llmgine daemon start`)."""
    from llmgine_cli.errors import DaemonUnreachable

    try:
        return app_ctx.client(autostart=False).config()
    except DaemonUnreachable as exc:
        exc.hint = f"; or `llmgine config {verb} --local` reads the file and environment here"
        raise


@app.command("path")
def path(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Print the config file's path (`$EDITOR "$(llmgine config path)"`).

    Examples:

      llmgine config path
    """
    app_ctx = state(ctx)
    where = str(config_path(app_ctx.env.environ))
    if quiet or resolve_format(app_ctx.env, output) in ("table", "plain"):
        render_text(app_ctx.env, where)
    else:
        render(app_ctx.env, {"config_file": where}, View(), output)


@app.command("show")
def show(ctx: typer.Context, local: Local = False, output: Output = None, quiet: Quiet = False) -> None:
    """Show every setting with its value and source (default, file, env, flag).

    Examples:

      llmgine config show

      llmgine config show -o jsonl | jq -r 'select(.source == "env") | .key'
    """
    app_ctx = state(ctx)
    view = local_view(app_ctx.env.environ) if local else _running(app_ctx, "show")
    render(app_ctx.env, view, SHOW_VIEW, output, quiet)


@app.command("get")
def get(ctx: typer.Context, key: Key, local: Local = False, output: Output = None, quiet: Quiet = False) -> None:
    """Print one setting's value as the running daemon uses it (empty when unset; --local: as
    the file and environment say here). A value `config set` wrote that the daemon has not
    read yet is named on stderr, with the restart that applies it.

    Examples:

      llmgine config get server.max_body_size

      llmgine config get API_PORT --local
    """
    app_ctx = state(ctx)
    key = canonical_key(key)
    view = local_view(app_ctx.env.environ) if local else _running(app_ctx, f"get {key}")
    entry = next((s for s in view.settings if s.key == key), None)
    if entry is None:  # a daemon older than this CLI
        raise typer.BadParameter(f"the daemon does not know {key!r}", param_hint="KEY")
    if quiet or resolve_format(app_ctx.env, output) in ("table", "plain"):
        render_text(app_ctx.env, value_text(entry.value))
    else:
        render(app_ctx.env, entry, VALUE_VIEW, output)
    if not local and not quiet:
        _note_pending(app_ctx.env, key, entry)


def _note_pending(env: Any, key: str, running: ConfigValue) -> None:
    """`config set server.port 8080 && config get server.port` printed the old value (or an
    empty line) with no word why: the daemon reads the file when it starts."""
    try:
        here = next(s for s in local_view(env.environ).settings if s.key == key)
    except (ConfigError, StopIteration):  # a broken file: `config set`/`show --local` say so
        return
    if here.value != running.value and here.source in ("file", "env"):
        said = f"{key} = {value_text(here.value) or '(empty)'}"
        if here.source == "file":
            env.err(
                f"note: {config_path(env.environ).name} says {said},"
                " which the running daemon has not read yet: `llmgine daemon restart`"
            )
        else:
            env.err(f"note: {here.env} here says {said}; the running daemon was started without it")


@app.command("set")
def set_(
    ctx: typer.Context,
    key: Key,
    value: Annotated[
        str,
        typer.Argument(metavar="VALUE", help="Read as the setting's type: 8080, true, 2.5, a list as a,b."),
    ],
) -> None:
    """Write KEY = VALUE to the config file, TOML or YAML (restart the daemon to apply it).
    Comments are not kept: a file that had some is first copied to <file>.bak.

    Examples:

      llmgine config set logging.level debug

      llmgine config get logging.level --local
    """
    app_ctx = state(ctx)
    key = canonical_key(key)
    try:
        parsed = parse_cli_value(key, value)
    except ConfigError as exc:  # "value: server.port = 'abc': ...": the VALUE is what the hint names
        raise typer.BadParameter(str(exc).removeprefix("value: "), param_hint="VALUE") from None
    where = config_path(app_ctx.env.environ)
    _, kept = _write(where, key, parsed)
    app_ctx.env.err(f"set {key} in {where}{kept}; restart the daemon to apply it: llmgine daemon restart")


def _write(where: Path, key: str, value: Any | None) -> tuple[bool, str]:
    """write_config_value, and what to say of the file's comments (the rewrite drops them;
    a file that had some is copied first)."""
    try:
        commented = has_comments(where.read_bytes())
    except OSError:
        commented = False
    changed = write_config_value(where, key, value)
    kept = f" (comments are not kept: the file as it was is in {commented_backup(where)})"
    return changed, kept if changed and commented else ""


@app.command("unset")
def unset(ctx: typer.Context, key: Key) -> None:
    """Remove KEY from the config file (back to its default).

    Examples:

      llmgine config unset logging.level
    """
    app_ctx = state(ctx)
    key = canonical_key(key)
    where = config_path(app_ctx.env.environ)
    if not where.exists():
        app_ctx.env.err(f"{key} is not set ({where} does not exist)")
        return
    changed, kept = _write(where, key, None)
    if not changed:  # a second `config unset`: nothing to say but that
        app_ctx.env.err(f"{key} is not set in {where}")
        return
    app_ctx.env.err(f"unset {key} in {where}{kept}; restart the daemon to apply it: llmgine daemon restart")
