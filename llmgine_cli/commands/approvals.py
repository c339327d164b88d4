"""`llmgine approval list|approve|deny` ↔ daemon api/approvals.py: tool calls a ToolChat
engine waits to have approved (docs/agents.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmgine_cli.commands.args import SessionOpt, parse_object
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(
    help="Tool calls waiting for a person's approval: list them, approve (maybe with other arguments) or deny them.",
    no_args_is_help=True,
)

LIST_VIEW = View(
    columns="ID=approval_id, TOOL=tool_name, ARGUMENTS=arguments, STATUS=status, EXPIRES=expires_at",
    items="approvals",
    id_field="approval_id",
)
APPROVAL_VIEW = View(id_field="approval_id")

ApprovalId = Annotated[
    str, typer.Argument(metavar="ID", help="The approval: its id, a unique prefix or its short id (`approval list`).")
]
Reason = Annotated[str | None, typer.Option("--reason", "-r", help="Why (the model hears it when denied).")]


def resolve(client: Any, session: str, given: str) -> str:
    """A full id, or the one approval of the session whose id starts or ends with ``given``."""
    from llmgine_cli.ids import is_full_id

    if is_full_id(given):
        return given
    bare = given.replace("-", "").lower()
    found = [
        a.approval_id
        for a in client.list_approvals(session, status="all").approvals
        if a.approval_id.replace("-", "").startswith(bare) or a.approval_id.replace("-", "").endswith(bare)
    ]
    if len(found) > 1:
        raise typer.BadParameter(f"{given!r} matches {len(found)} approvals; give more of it", param_hint="ID")
    return found[0] if found else given


@app.command("list")
def list_(
    ctx: typer.Context,
    session: SessionOpt,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Decided ones too.")] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """The session's tool calls waiting for a decision (--all: decided ones too).

    Examples:

      llmgine approval list -S demo --all
    """
    app_ctx = state(ctx)
    render(
        app_ctx.env,
        app_ctx.client().list_approvals(session, status="all" if all_ else None),
        LIST_VIEW,
        output,
        quiet,
    )


@app.command("approve")
def approve(
    ctx: typer.Context,
    approval_id: ApprovalId,
    session: SessionOpt,
    reason: Reason = None,
    arguments: Annotated[
        str | None,
        typer.Option("--arguments", metavar="JSON", help="Run it with these arguments instead (a JSON object)."),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Let the tool call run (with --arguments: with those instead of the model's).

    Examples:

      A=$(llmgine approval list -S demo -q | head -1)

      llmgine approval approve "$A" -S demo --reason "looks fine"
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    edited = parse_object(arguments, "--arguments") if arguments is not None else None
    decided = client.decide_approval(
        session, resolve(client, session, approval_id), "approve", reason=reason, arguments=edited
    )
    render(app_ctx.env, decided, APPROVAL_VIEW, output, quiet)


@app.command("deny")
def deny(
    ctx: typer.Context,
    approval_id: ApprovalId,
    session: SessionOpt,
    reason: Reason = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Refuse the tool call: the model gets the refusal (and --reason) as the tool's result.

    Examples:

      A=$(llmgine approval list -S demo -q | head -1)

      llmgine approval deny "$A" -S demo --reason "not that file"
    """
    app_ctx = state(ctx)
    client = app_ctx.client()
    decided = client.decide_approval(session, resolve(client, session, approval_id), "deny", reason=reason)
    render(app_ctx.env, decided, APPROVAL_VIEW, output, quiet)
