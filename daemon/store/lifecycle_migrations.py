"""Schema of the command lifecycle beyond one queue (issue #20; migration numbers 80-89):
dependencies between commands (bus/commands/deps.py) and retries (bus/commands/retries.py)."""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.migrations import migration, run_script


@migration(80, "commands: dependencies (after)")
def m080_command_after(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- A command submitted with after: [ids] waits (status 'blocked') until they ended.
        -- policy: 'completed' (each must complete, else the command is cancelled) or 'always'.
        CREATE TABLE command_after (
            command_id TEXT NOT NULL,
            after_id TEXT NOT NULL,
            policy TEXT NOT NULL,
            PRIMARY KEY (command_id, after_id)
        );
        CREATE INDEX command_after_after ON command_after (after_id);
        -- At start-up the blocked commands are loaded again (queries repeat the WHERE term).
        CREATE INDEX commands_blocked ON commands (status) WHERE status = 'blocked'
        """,
    )


@migration(81, "commands: attempts and retries")
def m081_command_retries(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- attempt: 1 for the first run, one more per retry (automatic or `command retry`).
        -- retry_at: when a queued command that failed may run again (a restart keeps the delay).
        ALTER TABLE commands ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE commands ADD COLUMN retry_at TEXT
        """,
    )
