"""`llmgine webhook add|list|get|delete|deliveries` ↔ daemon api/webhooks.py.

A webhook POSTs every matching event to a URL, signed the Standard Webhooks way; the secret
that verifies the signatures is printed once, by `add`. Only hosts the daemon's
webhooks.allowed_hosts allows can be called (default: this machine).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer

from llmgine_cli.commands import several
from llmgine_cli.commands.args import choices, hidden_input, id_argument, session_filter_callback
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format

app = typer.Typer(
    help="Webhooks: events POSTed to a URL, signed (Standard Webhooks), retried, each attempt recorded.",
    no_args_is_help=True,
)

LIST_VIEW = View(
    columns="ID=webhook_id, URL=url, EVENTS=events, SESSION=session_id, PENDING=pending, OK=delivered, FAILED=failed",
    items="webhooks",
    id_field="webhook_id",
)
ONE_VIEW = View(id_field="webhook_id")
ATTEMPTS_VIEW = View(
    columns=(
        "DELIVERY=delivery_id, EVENT=event_type, STATUS=status, TRY=attempt, CODE=status_code, TOOK=duration_ms, "
        "ERROR=error"
    ),
    items="attempts",
    id_field="delivery_id",
    empty="no deliveries",
)

WebhookId = Annotated[
    str,
    id_argument("webhook", "/api/webhooks", "webhooks", "webhook_id", paged=False),
]
OptionalSession = Annotated[
    str | None,
    typer.Option(
        "--session",
        "-S",
        metavar="ID",
        show_default=False,
        callback=session_filter_callback,
        help="Only this session's (its id, a unique prefix, its short id or its name).",
    ),
]


@app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST: http(s)://host[:port]/path.")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", metavar="TYPE", help="An event type, a prefix ending in *, or * (default). Repeatable."
        ),
    ] = None,
    session: OptionalSession = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin", help="Read the signing secret (whsec_...) from stdin instead of generating one."
        ),
    ] = False,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="If a webhook of this URL, events and session exists, print it (without its secret: that "
            "was shown once) instead of adding a second one that would deliver each event twice; with "
            "--secret-stdin, one with another secret is exit 6.",
        ),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Register a webhook and print it with its secret (shown this once: keep it to verify
    signatures; -q prints only the id, -o json the secret too).

    Example:

      llmgine webhook add http://localhost:8080/hook -S demo -o json | jq .secret

    Only hosts the daemon's setting webhooks.allowed_hosts lists may be called (by default
    loopback: 127.0.0.0/8, ::1, localhost); another is 403 FORBIDDEN until it is added there.
    """
    app_ctx = state(ctx)
    secret = hidden_input("signing secret (whsec_...)", "--secret-stdin").strip() if secret_stdin else None
    if secret_stdin and not secret:  # as `secret set` and `context add --api-key-stdin` (was the daemon's 422)
        raise typer.BadParameter("the secret on stdin is empty", param_hint="--secret-stdin")
    hook = app_ctx.client().create_webhook(
        url, events=event or ["*"], session_id=session, secret=secret, if_exists="reuse" if reuse else None
    )
    render(app_ctx.env, hook, ONE_VIEW, output, quiet)
    if hook.secret is None:  # --reuse found it: its secret was shown when it was added
        if not quiet:
            app_ctx.env.err(f"webhook {hook.webhook_id} was already there (its secret was shown when it was added)")
    elif not quiet and resolve_format(app_ctx.env, output) in ("table", "plain"):
        app_ctx.env.err("the secret is shown only now: webhook-signature is its HMAC-SHA256 (Standard Webhooks)")


@app.command("list")
def list_(ctx: typer.Context, session: OptionalSession = None, output: Output = None, quiet: Quiet = False) -> None:
    """List webhooks with their pending, delivered and failed deliveries.

    Examples:

      llmgine webhook list -o 'table {{.webhook_id}}\\t{{.url}}'   # URLs in full
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().list_webhooks(session), LIST_VIEW, output, quiet)


@app.command("get")
def get(ctx: typer.Context, webhook_id: WebhookId, output: Output = None, quiet: Quiet = False) -> None:
    """Show one webhook (never its secret).

    Examples:

      W=$(llmgine webhook add http://localhost:8080/hook -S demo --reuse -q)

      llmgine webhook get "$W"
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().get_webhook(webhook_id), ONE_VIEW, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    webhook_ids: Annotated[list[str], several.ids_argument("webhook")],
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Delete webhooks; what one had not delivered yet is dropped (exit 4 if there is none).
    Several are deleted in turn, as `docker rm` removes containers (one that fails is its
    error line and the exit code; the others still go).

    Examples:

      llmgine webhook list -S demo -q | xargs -r llmgine webhook delete
    """
    app_ctx = state(ctx)
    delete_call = app_ctx.client().delete_webhook
    several.delete_listed(
        app_ctx, webhook_ids, "webhook", "/api/webhooks", "webhook_id", delete_call, output, quiet, paged=False
    )


def attempt_rows(page: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per attempt (a delivery not attempted yet: one row without one)."""
    rows = []
    for d in page["deliveries"]:
        base = {"delivery_id": d["delivery_id"], "event_type": d["event_type"], "status": d["status"]}
        for a in d["history"] or [{"attempt": None}]:
            rows.append({**base, **a})
    return rows


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook_id: WebhookId,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            callback=choices("pending", "delivered", "failed"),
            help="pending, delivered or failed.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many deliveries.")
    ] = 50,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """A webhook's deliveries, newest first: every attempt with its HTTP status, error and duration.

    -o json/jsonl print the deliveries (each with its attempts in "history").

    Examples:

      W=$(llmgine webhook add http://localhost:8080/hook -S demo --reuse -q)

      llmgine webhook deliveries "$W" --status failed
    """
    app_ctx = state(ctx)
    page = app_ctx.client().webhook_deliveries(webhook_id, status=status, limit=limit)
    if quiet or resolve_format(app_ctx.env, output) in ("json", "jsonl"):
        render(app_ctx.env, page, View(items="deliveries", id_field="delivery_id"), output, quiet)
        return
    render(app_ctx.env, {"attempts": attempt_rows(msgspec.to_builtins(page))}, ATTEMPTS_VIEW, output, quiet)
