"""`llmgine auth key ...` ↔ daemon api/auth.py (docs/security.md)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from llmgine_cli.commands import several
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(help="Credentials for TCP clients (docs/security.md).", no_args_is_help=True)
key_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")

LIST_VIEW = View(
    columns=(
        "ID=key_id, NAME=name, PREFIX=prefix, STATE=state, CREATED=created_at, LAST USED=last_used_at, "
        "EXPIRES=expires_at"
    ),
    items="keys",
    id_field="key_id",
    empty="no API keys",
)
# -q prints the key itself: `KEY=$(llmgine auth key create -q)`.
CREATED_VIEW = View(id_field="key", raw_keys=frozenset({"key"}))
KEY_VIEW = View(id_field="key_id")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")

KeyId = Annotated[str, typer.Argument(metavar="ID", help="The key's id (or its lgk_ prefix).")]


def parse_expiry(text: str) -> tuple[int | None, str | None]:
    """``30d``, ``12h``, ``90m``, ``2w``, ``3600`` (seconds) -> expires_in; an ISO 8601 time
    (``2026-01-31``, ``2026-01-31T12:00:00Z``) -> expires_at."""
    match = _DURATION.match(text.strip().lower())
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
        if seconds <= 0:
            raise typer.BadParameter("must be longer than zero", param_hint="--expires")
        return seconds, None
    if re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        return None, text.strip()
    raise typer.BadParameter(f"{text!r} is not a duration (30d, 12h, 90m, 2w) or an ISO date", param_hint="--expires")


@key_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name to recognise it by.")] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", "-e", metavar="WHEN", help="Expiry: a duration (30d, 12h, 2w) or an ISO date (default: never)."
        ),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Create an API key. It is shown once: only its hash is kept (`-q` prints only the key).

    Examples:

      KEY=$(llmgine auth key create --name ci --expires 30d -q)
    """
    expires_in, expires_at = parse_expiry(expires) if expires else (None, None)
    app_ctx = state(ctx)
    created = app_ctx.client().create_key(name, expires_in=expires_in, expires_at=expires_at)
    render(app_ctx.env, created, CREATED_VIEW, output, quiet)
    if not quiet:
        app_ctx.env.err("store this key now: it cannot be shown again")


@key_app.command("list")
def list_(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """List API keys (never the keys themselves): name, prefix, state, created, last used, expiry.

    Examples:

      llmgine auth key list --format '{{.key_id}} {{.name}} {{.state}}'
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().list_keys(), LIST_VIEW, output, quiet)


@key_app.command("get")
def get(ctx: typer.Context, key_id: KeyId, output: Output = None, quiet: Quiet = False) -> None:
    """Show one API key.

    Examples:

      ID=$(llmgine auth key create --name ci -o json | jq -r .key_id)

      llmgine auth key get "$ID" -o json
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_key(key_id), KEY_VIEW, output, quiet)


@key_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The keys' ids (or their lgk_ prefixes).")],
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Revoke API keys: at once, and their open WebSockets are closed (1008). Several in turn,
    as `docker rm` (one that fails is its error line and the exit code; the others still go).

    Examples:

      ID=$(llmgine auth key create --name tmp -o json | jq -r .key_id)

      llmgine auth key revoke "$ID"
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    several.show_each(app_ctx, key_ids, client.revoke_key, KEY_VIEW, "keys", LIST_VIEW, output, quiet)
