"""`llmgine usage` ↔ daemon api/usage.py: tokens and estimated cost of the model calls
engines made, summed (docs/agents.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmgine_cli import completion
from llmgine_cli.commands.args import choices, parse_time, session_callback
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

REPORT_VIEW = View(
    columns=(
        "KEY=key, CMDS=usage.commands, PROMPT=usage.prompt_tokens, CACHED=usage.cached_tokens, "
        "OUTPUT=usage.completion_tokens, TOTAL=usage.total_tokens, COST USD=cost"
    ),
    items="groups",
    id_field="key",
    title="usage",
)


def cost_text(usage: dict[str, Any]) -> str:
    cost = usage.get("cost_usd")
    if cost is None:
        return "-"
    text = f"{cost:.4f}"
    return text + ("+?" if usage.get("unpriced_tokens") else "")  # some calls had no price


def usage(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-S",
            metavar="ID",
            help="Only this session (id, prefix, short id or name).",
            autocompletion=completion.session_ids,
            callback=session_callback,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="T", help="Commands created since T: ISO 8601 or a duration ago (15m, 2d)."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="model|engine|session",
            help="One row per model, engine or session.",
            callback=choices("model", "engine", "session"),
        ),
    ] = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Tokens (prompt, cached, output) and estimated cost of the model calls engines made,
    summed over commands; the last row is the total. Cost comes from the daemon's price table
    (usage.prices); `-` = no call had a known price, `+?` = some did not.

    Examples:

      llmgine usage --by model --since 7d

      llmgine usage -S demo -o json | jq .total.cost_usd
    """
    app_ctx = state(ctx)
    report = app_ctx.client().usage(session_id=session, since=parse_time(since, "--since"), by=by)
    fmt = getattr(output, "value", output)
    if fmt in ("json", "jsonl") or "{{" in (fmt or "") or quiet:  # the API's data (templates too)
        render(app_ctx.env, report, REPORT_VIEW, output, quiet)
        return
    import msgspec

    data = msgspec.to_builtins(report)
    rows = [*data["groups"], {"key": "total", "usage": data["total"]}]
    from llmgine_cli.ids import short_id

    for row in rows:
        row["cost"] = cost_text(row["usage"])
        row["key"] = short_id(row["key"]) if by in ("engine", "session") and row["key"] != "total" else row["key"]
    render(app_ctx.env, {"groups": rows}, REPORT_VIEW, output, quiet)
