"""`llmgine health | status | shutdown` ↔ daemon api/system.py (and `version`, unlisted).

These are top-level commands (app.py adds this Typer without a name). None of them
auto-starts the daemon: starting one just to probe or stop it would be absurd.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, builtins, render, resolve_format
from llmgine_cli.status import ExitStatus

app = typer.Typer()

HEALTH_VIEW = View(fields=("status", "version", "uptime", "timestamp"))
STATUS_VIEW = View(id_field="pid")
SHUTDOWN_VIEW = View()


# A probe has no id to print: -q prints nothing, as `grep -q`, and the exit code answers.
HealthQuiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing: the exit code answers.")]


@app.command("version", hidden=True)
def version() -> None:
    """Print the CLI version (as --version; `gh version` and `docker version` users type this)."""
    from llmgine_daemon import __version__

    typer.echo(f"llmgine {__version__}")


@app.command("health")
def health(ctx: typer.Context, output: Output = None, quiet: HealthQuiet = False) -> None:
    """Probe the daemon (exit 0 healthy; 1 degraded: its database could not be reached at the last
    try, or shutting down; 3 not running). `llmgine health -q && ...` in a script.

    Examples:

      llmgine health -q && echo up

      llmgine health -o json | jq -r .version
    """
    app_ctx = state(ctx)
    result = app_ctx.client(autostart=False).health()
    render(app_ctx.env, result, HEALTH_VIEW, output, quiet)
    if result.status != "healthy":
        raise typer.Exit(ExitStatus.ERROR)


@app.command("status")
def status(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Show the daemon's version, uptime, listeners, storage, counts and the nodes sharing its
    database with their leases (-q: its pid).

    Examples:

      llmgine status -q

      llmgine status -o json | jq .storage
    """
    app_ctx = state(ctx)
    render_status(app_ctx.env, app_ctx.client(autostart=False).status(), output, quiet)


def render_status(env: Any, status: Any, output: Output, quiet: bool) -> None:
    """A status; in a table, the cluster's nodes one line each (id, pid, leases held)."""
    data = builtins(status)
    cluster = data.get("cluster") if isinstance(data, dict) else None
    if isinstance(cluster, dict) and resolve_format(env, output) not in ("json", "jsonl"):
        cluster["nodes"] = "\n".join(
            f"{n['node_id']}  pid {n['pid']}  {n['leases']} lease{'s' if n['leases'] != 1 else ''}"
            + ("  (this node)" if n["node_id"] == cluster["node_id"] else "")
            for n in cluster.get("nodes") or []
        )
    render(env, data, STATUS_VIEW, output, quiet)


@app.command("shutdown")
def shutdown(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Ask the daemon to exit gracefully (does not wait; `llmgine daemon stop` does).

    Examples:

      llmgine shutdown
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client(autostart=False).shutdown(), SHUTDOWN_VIEW, output, quiet)
