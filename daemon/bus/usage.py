"""Token usage and estimated cost: recorded per command, summed per batch, engine, session.

An engine records each model call's tokens on its command's row as the call ends
(``UsageBook.record``: prompt, completion, cached tokens and the cost from the price table,
added to what the row holds, so a command that calls the model five times carries the sum).
Everything above a command is a SQL ``SUM`` over those columns (migration 100), read when
asked: ``GET /api/sessions/{id}``, ``GET /api/engines/{id}``, ``GET /api/usage``; a batch sums
its commands' records.

Costs are estimates: the price of the model (USD per million tokens, ``usage.prices`` over
DEFAULT_PRICES, below) at the time of the call, stored with it. A model without a
price adds its tokens to ``unpriced_tokens`` instead of to the cost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.observability import metrics
from llmgine_daemon.protocol import Usage, UsageGroup, UsageReport
from llmgine_daemon.store.db import Store

# Estimated prices, USD per million tokens: [input, output, cached input]. Looked up by the
# model's name with and without its provider prefix, then by the longest known prefix
# ("claude-3-5-haiku" prices "claude-3-5-haiku-20241022"). usage.prices adds to and overrides
# these (Prices, below). Published list prices as of late 2024 / 2025; check your provider's.
DEFAULT_PRICES: dict[str, list[float]] = {
    "gpt-4o": [2.50, 10.00, 1.25],
    "gpt-4o-mini": [0.15, 0.60, 0.075],
    "gpt-4.1": [2.00, 8.00, 0.50],
    "gpt-4.1-mini": [0.40, 1.60, 0.10],
    "gpt-4.1-nano": [0.10, 0.40, 0.025],
    "o3-mini": [1.10, 4.40, 0.55],
    "o4-mini": [1.10, 4.40, 0.275],
    "claude-3-5-haiku": [0.80, 4.00, 0.08],
    "claude-3-haiku": [0.25, 1.25, 0.03],
    "claude-3-5-sonnet": [3.00, 15.00, 0.30],
    "claude-3-7-sonnet": [3.00, 15.00, 0.30],
    "claude-sonnet-4": [3.00, 15.00, 0.30],
    "claude-3-opus": [15.00, 75.00, 1.50],
    "claude-opus-4": [15.00, 75.00, 1.50],
}

# The columns row_to_command reads after the rest (bus/commands/records.py).
USAGE_COLUMNS = "usage_prompt_tokens, usage_completion_tokens, usage_cached_tokens, usage_cost_usd"
# One row of sums: commands, prompt, completion, cached, cost, unpriced tokens.
SUMS = (
    "COUNT(usage_prompt_tokens), COALESCE(SUM(usage_prompt_tokens), 0),"
    " COALESCE(SUM(usage_completion_tokens), 0), COALESCE(SUM(usage_cached_tokens), 0),"
    " SUM(usage_cost_usd),"
    " COALESCE(SUM(CASE WHEN usage_cost_usd IS NULL"
    " THEN usage_prompt_tokens + usage_completion_tokens ELSE 0 END), 0)"
)
BY_COLUMNS = {"model": "usage_model", "engine": "engine_id", "session": "session_id"}


def usage_from_row(row: Sequence[Any]) -> Usage | None:
    """A command's usage from its USAGE_COLUMNS (None: it called no model)."""
    prompt, completion, cached, cost = row[:4]
    if prompt is None:
        return None
    total = prompt + (completion or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion or 0,
        cached_tokens=cached or 0,
        total_tokens=total,
        cost_usd=round(cost, 8) if cost is not None else None,
        unpriced_tokens=total if cost is None else 0,
        commands=1,
    )


def usage_from_sums(row: Sequence[Any]) -> Usage:
    commands, prompt, completion, cached, cost, unpriced = row[:6]
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        total_tokens=prompt + completion,
        cost_usd=round(cost, 8) if cost is not None else None,
        unpriced_tokens=unpriced,
        commands=commands,
    )


def add_usage(items: Iterable[Usage | None]) -> Usage | None:
    """The sum of some records' usage (a batch's commands); None if none called a model."""
    found = [u for u in items if u is not None]
    if not found:
        return None
    costs = [u.cost_usd for u in found if u.cost_usd is not None]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in found),
        completion_tokens=sum(u.completion_tokens for u in found),
        cached_tokens=sum(u.cached_tokens for u in found),
        total_tokens=sum(u.total_tokens for u in found),
        cost_usd=round(sum(costs), 8) if costs else None,
        unpriced_tokens=sum(u.unpriced_tokens for u in found),
        commands=sum(u.commands for u in found),
    )


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None

    def cost(self, prompt: int, completion: int, cached: int) -> float:
        cached_rate = self.cached_input if self.cached_input is not None else self.input
        return ((prompt - cached) * self.input + cached * cached_rate + completion * self.output) / 1_000_000


class Prices:
    """``usage.prices`` over the built-in table."""

    def __init__(self, overrides: Mapping[str, Sequence[float]] | None = None) -> None:
        table = {**DEFAULT_PRICES, **(overrides or {})}
        self.table = {name: Price(*values) for name, values in table.items()}

    def lookup(self, model: str) -> Price | None:
        """By the full name (``openai/gpt-4o``), the bare one, then the longest known prefix."""
        bare = model.split("/", 1)[1] if "/" in model else model
        for name in (model, bare):
            if name in self.table:
                return self.table[name]
        prefixes = [name for name in self.table if bare.startswith(name + "-")]
        return self.table[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt: int, completion: int, cached: int) -> float | None:
        price = self.lookup(model)
        return price.cost(prompt, completion, cached) if price is not None else None


def parse_by(by: str | None) -> str | None:
    if by is None or by == "":
        return None
    if by not in BY_COLUMNS:
        raise invalid("by", f"must be one of {', '.join(BY_COLUMNS)}")
    return by


class UsageBook:
    def __init__(self, store: Store, prices: Prices | None = None) -> None:
        self.store = store
        self.prices = prices or Prices()

    async def record(
        self,
        command_id: str,
        engine_id: str | None,
        provider: str,
        model: str,
        prompt: int,
        completion: int,
        cached: int,
    ) -> Usage | None:
        """Add one model call to its command's row; returns the command's usage so far."""
        full = f"{provider}/{model}"
        cost = self.prices.cost(full, prompt, completion, cached)
        for kind, count in (("prompt", prompt), ("completion", completion), ("cached", cached)):
            if count:
                metrics.inc("llm_tokens_total", count, provider=provider, model=model, kind=kind)
        if cost:
            metrics.inc("llm_cost_usd_total", cost, provider=provider, model=model)

        def write(conn: sqlite3.Connection) -> Usage | None:
            # No "? IS NULL" on a parameter: PostgreSQL cannot type a NULL one. Without a
            # price, the cost column is left as it is.
            priced = " usage_cost_usd = COALESCE(usage_cost_usd, 0) + ?," if cost is not None else ""
            conn.execute(
                "UPDATE commands SET"
                " usage_prompt_tokens = COALESCE(usage_prompt_tokens, 0) + ?,"
                " usage_completion_tokens = COALESCE(usage_completion_tokens, 0) + ?,"
                " usage_cached_tokens = COALESCE(usage_cached_tokens, 0) + ?,"
                f"{priced} usage_model = ?, engine_id = COALESCE(engine_id, ?)"
                " WHERE command_id = ?",
                (prompt, completion, cached, *([cost] if cost is not None else []), full, engine_id, command_id),
            )
            row = conn.execute(f"SELECT {USAGE_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            return usage_from_row(row) if row is not None else None

        return await self.store.write(write)

    @staticmethod
    def sums(conn: sqlite3.Connection, column: str, value: str) -> Usage:
        """The usage of every command whose ``column`` (session_id, engine_id) is ``value``: only
        commands that made model calls, through the partial indexes of migration 103, so a
        session of 100,000 DummyEngine commands costs its GET nothing here."""
        row = conn.execute(
            f"SELECT {SUMS} FROM commands WHERE {column} = ? AND usage_prompt_tokens IS NOT NULL", (value,)
        ).fetchone()
        return usage_from_sums(row)

    async def report(self, session_id: str | None, since: str | None, by: str | None) -> UsageReport:
        """``GET /api/usage``: sums of the commands (of a session, created since a time),
        grouped by model, engine or session."""
        by = parse_by(by)
        where, params = ["usage_prompt_tokens IS NOT NULL"], []
        if session_id:
            where.append("session_id = ?")
            params.append(session_id)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        clause = " AND ".join(where)

        def read(conn: sqlite3.Connection) -> UsageReport:
            total = usage_from_sums(conn.execute(f"SELECT {SUMS} FROM commands WHERE {clause}", params).fetchone())
            groups = []
            if by is not None:
                column = BY_COLUMNS[by]
                rows = conn.execute(
                    f"SELECT {column}, {SUMS} FROM commands WHERE {clause} GROUP BY {column}"
                    " ORDER BY SUM(usage_prompt_tokens + usage_completion_tokens) DESC",
                    params,
                ).fetchall()
                groups = [UsageGroup(key=r[0], usage=usage_from_sums(r[1:])) for r in rows]
            return UsageReport(by=by, session_id=session_id, since=since, groups=groups, total=total)

        return await self.store.read(read)
