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


@migration(101, "engine memory rows carry the seq they were added and dropped at")
def m101_memory_seq(conn: sqlite3.Connection) -> None:
    # added_seq: the highest event seq when the row was written; dropped_seq: the same when a
    # trim or a reset took it out of the conversation (rows are no longer deleted, so a fork
    # can rebuild memory as it stood at any seq: bus/fork.py). Rows from before this migration
    # have added_seq NULL: a fork at any seq sees them while they are current (docs/agents.md).
    run_script(
        conn,
        """
        ALTER TABLE engine_messages ADD COLUMN added_seq INTEGER;
        ALTER TABLE engine_messages ADD COLUMN dropped_seq INTEGER
        """,
    )


@migration(102, "approval before a tool runs")
def m102_approvals(conn: sqlite3.Connection) -> None:
    # One row per tool call a ToolChat engine asked a person about (bus/approvals.py). state:
    # the engine's tool loop as it stood when it asked (engines/approval.py), so a command
    # waiting at a daemon restart resumes waiting, and then goes on, from there.
    run_script(
        conn,
        """
        CREATE TABLE approvals (
            approval_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            command_id TEXT NOT NULL,
            engine_id TEXT,
            call_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            arguments TEXT NOT NULL,
            status TEXT NOT NULL,
            requested_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            decided_at TEXT,
            decided_by TEXT,
            reason TEXT,
            final_arguments TEXT,
            state TEXT
        );
        CREATE INDEX approvals_session ON approvals (session_id, requested_at);
        CREATE INDEX approvals_command ON approvals (command_id);
        CREATE INDEX approvals_pending ON approvals (status) WHERE status = 'pending';
        ALTER TABLE tools ADD COLUMN requires_approval INTEGER NOT NULL DEFAULT 0
        """,
    )


@migration(103, "usage sums read only the commands that made model calls")
def m103_usage_indexes(conn: sqlite3.Connection) -> None:
    # GET /api/sessions/{id} and /api/engines/{id} sum the usage of their commands
    # (bus/usage.py UsageBook.sums): without these, every GET read every command of the
    # session (a session of 10,000 DummyEngine commands: 6 ms per GET, bench/wrk_http.py).
    run_script(
        conn,
        """
        CREATE INDEX commands_usage_session ON commands (session_id) WHERE usage_prompt_tokens IS NOT NULL;
        CREATE INDEX commands_usage_engine ON commands (engine_id) WHERE usage_prompt_tokens IS NOT NULL
        """,
    )
