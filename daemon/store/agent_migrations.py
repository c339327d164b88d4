"""Migrations 100-109: what agent builders need (#21) - token usage and cost per command,
forking a session at a seq, approval before a tool runs.

Portable SQL only (a PostgreSQL backend translates the schema): INTEGER/TEXT/REAL columns,
``?`` placeholders, no triggers. Registered on import, like obs_migrations (store/db.py).
"""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.migrations import migration, run_script


@migration(100, "token usage and estimated cost per command")
def m100_command_usage(conn: sqlite3.Connection) -> None:
    # Written by the engine that made the model calls (bus/usage.py), NULL for commands that
    # made none. The cost is computed when the call is recorded, from the price table of
    # that time (usage.prices); NULL when the model had no price. Sums per batch, engine and
    # session are SQL SUMs over these columns.
    run_script(
        conn,
        """
        ALTER TABLE commands ADD COLUMN usage_prompt_tokens INTEGER;
        ALTER TABLE commands ADD COLUMN usage_completion_tokens INTEGER;
        ALTER TABLE commands ADD COLUMN usage_cached_tokens INTEGER;
        ALTER TABLE commands ADD COLUMN usage_model TEXT;
        ALTER TABLE commands ADD COLUMN usage_cost_usd REAL;
        ALTER TABLE commands ADD COLUMN engine_id TEXT;
        CREATE INDEX commands_engine ON commands (engine_id) WHERE engine_id IS NOT NULL
        """,
    )
