"""Schema of the telemetry database, logs and spans (migration numbers 40-49 belong to it:
store/telemetry.py)."""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.migrations import migration, run_script

# The telemetry store's tables (on PostgreSQL they share the database with the rest).
TELEMETRY_TABLES = ("logs", "spans")


@migration(40, "observability: logs and spans")
def m040_logs_spans(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- AUTOINCREMENT: ids are never reused after pruning, so ?after= stays a valid cursor.
        CREATE TABLE logs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            timestamp TEXT NOT NULL,
            level TEXT NOT NULL,
            levelno INTEGER NOT NULL,
            logger TEXT NOT NULL,
            message TEXT NOT NULL,
            source TEXT NOT NULL,
            session_id TEXT,
            command_id TEXT,
            engine_id TEXT,
            request_id TEXT,
            trace_id TEXT,
            span_id TEXT,
            metadata TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX logs_session ON logs (session_id, id);
        CREATE INDEX logs_timestamp ON logs (timestamp);
        CREATE INDEX logs_trace ON logs (trace_id);

        CREATE TABLE spans (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_id TEXT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            start TEXT NOT NULL,
            start_unix REAL NOT NULL,
            duration_ms REAL NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            attributes TEXT NOT NULL DEFAULT '{}',
            session_id TEXT,
            -- 1 when the parent is not a span of this daemon (none, or the client's traceparent)
            local_root INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX spans_trace ON spans (trace_id);
        CREATE INDEX spans_roots ON spans (start_unix) WHERE local_root = 1;
        CREATE INDEX spans_session ON spans (session_id, start_unix);
        """,
    )
