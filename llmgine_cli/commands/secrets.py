"""`llmgine secret set|list|delete` ↔ daemon api/secrets.py (daemon/secrets.py).

The daemon reads provider keys from its own environment, not the shell's you export them in;
`llmgine secret set OPENAI_API_KEY` hands one to the daemon instead (stored 0600, never shown
again, never logged).
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from llmgine_cli.commands import several
from llmgine_cli.commands.args import hidden_input
from llmgine_cli.confirm import Yes, confirm
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(
    help="Secrets the daemon keeps for providers (e.g. OPENAI_API_KEY): set, list, delete.",
    no_args_is_help=True,
)
LIST_VIEW = View(columns="NAME=name, UPDATED=updated_at", items="secrets", id_field="name")
ONE_VIEW = View(id_field="name")
_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")  # daemon/secrets.py NAME

Name = Annotated[
    str, typer.Argument(metavar="NAME", help="An environment variable's name, e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY.")
]


@app.command("set")
def set_(
    ctx: typer.Context,
    name: Name,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Set a secret. The value is asked for on a terminal (not echoed), else read from stdin.
    Never an argument, which other users and the shell history would see.

    Examples:

      printf %s "$OPENAI_API_KEY" | llmgine secret set OPENAI_API_KEY
    """
    if not _NAME.match(name):
        raise typer.BadParameter(
            "must be an environment variable's name (A-Z, 0-9, _; not starting with a digit)", param_hint="NAME"
        )
    value = hidden_input(name, "stdin")
    if not value:
        raise typer.BadParameter("the value is empty", param_hint="stdin")
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().set_secret(name, value), ONE_VIEW, output, quiet)


@app.command("list")
def list_(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """List the secrets' names and when they were set (never their values).

    Examples:

      llmgine secret list -q
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().list_secrets(), LIST_VIEW, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The secrets' names.")],
    yes: Yes = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Delete secrets (exit 4 if one is not there); several in turn, as `docker rm` (one that
    fails is its error line and the exit code; the others still go). Asks first on a terminal
    (--yes does not); a script is never asked.

    Examples:

      printf %s old | llmgine secret set OLD_TOKEN

      llmgine secret delete OLD_TOKEN --yes
    """
    app_ctx = state(ctx)
    what = f"secret {names[0]}" if len(names) == 1 else f"{len(names)} secrets ({', '.join(names)})"
    confirm(app_ctx, f"Delete {what}? Whatever uses {'it' if len(names) == 1 else 'them'} will fail.", yes)
    client = app_ctx.client()

    def delete_one(name: str) -> dict[str, str]:
        client.delete_secret(name)
        return {"name": name}

    several.delete_each(app_ctx, names, delete_one, "secret", "secrets", "name", output, quiet)
