"""Schema of webhooks (their delivery outbox and attempts) and schedules: migration numbers
90-99 (bus/webhooks.py, bus/schedules.py).

Portable to PostgreSQL: no AUTOINCREMENT or rowid, no SQLite-only functions; timestamps are
ISO text computed in Python (they sort as text); every claim of shared work (a delivery, a
schedule's firing, the outbox cursor) is a conditional UPDATE whose row count says who won.
"""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.migrations import migration, run_script


@migration(90, "webhooks: subscriptions, delivery outbox, attempts, event cursor")
def m090_webhooks(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- secret: the signing key (whsec_...), needed in clear to sign, shown once at creation.
        -- after_seq: events up to it were in the log before the webhook existed (not delivered).
        CREATE TABLE webhooks (
            webhook_id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            events TEXT NOT NULL,
            session_id TEXT,
            secret TEXT NOT NULL,
            after_seq INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX webhooks_session ON webhooks (session_id);

        -- The outbox: one row per (webhook, event), written in the transaction that moves the
        -- cursor past the event. lease_until/lease_owner: a sender's claim on the row.
        CREATE TABLE webhook_deliveries (
            delivery_id TEXT PRIMARY KEY,
            webhook_id TEXT NOT NULL,
            event_seq INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            session_id TEXT,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            lease_until TEXT,
            lease_owner TEXT,
            last_status_code INTEGER,
            last_error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            UNIQUE (webhook_id, event_seq)
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
        CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);

        CREATE TABLE webhook_attempts (
            delivery_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            status_code INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        );

        -- How far the event log has been turned into outbox rows (one row, name 'events').
        CREATE TABLE webhook_cursor (
            name TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        );
        """,
    )
    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    conn.execute("INSERT INTO webhook_cursor (name, seq) VALUES ('events', ?)", (top,))


@migration(91, "schedules")
def m091_schedules(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- kind: cron, every or at. spec: the cron expression, the interval in seconds, or the
        -- ISO time. next_due (ISO UTC) is the firing claimed next: a firing moves it on in the
        -- transaction that inserts its command, conditionally on its old value.
        CREATE TABLE schedules (
            schedule_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('cron', 'every', 'at')),
            spec TEXT NOT NULL,
            timezone TEXT NOT NULL,
            missed TEXT NOT NULL CHECK (missed IN ('skip', 'run_once')),
            command TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done')),
            next_due TEXT,
            fire_count INTEGER NOT NULL DEFAULT 0,
            last_fired_at TEXT,
            last_command_id TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX schedules_due ON schedules (status, next_due);
        CREATE INDEX schedules_session ON schedules (session_id);
        """,
    )


@migration(135, "webhooks: which were registered with a session token")
def m135_webhooks_by_session_token(conn: sqlite3.Connection) -> None:
    # A session token's webhooks call hosts of webhooks.session_token_allowed_hosts, at every
    # attempt (bus/webhook_outbox.py): the row says whose they are. Rows from before: 0.
    conn.execute("ALTER TABLE webhooks ADD COLUMN session_token INTEGER NOT NULL DEFAULT 0")
