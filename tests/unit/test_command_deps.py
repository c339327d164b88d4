"""The dependency walk of bus/commands/deps.py on a real, migrated SQLite database.

Through the API a cycle cannot be formed (ids are made at submission and `after` must name
stored commands); the walk is checked here on edges written directly, as a store that some
future path (or a hand edit) left with one would hold them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from llmgine_daemon.bus.commands.deps import _check_cycle
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.store.migrations import apply_migrations


def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    apply_migrations(conn)
    for cid, status in (("a", "blocked"), ("b", "blocked"), ("c", "completed")):
        conn.execute(
            "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
            " VALUES (?, 's', 'T', ?, '2026-01-01T00:00:00Z')",
            (cid, status),
        )
    conn.executemany(
        "INSERT INTO command_after (command_id, after_id, policy) VALUES (?, ?, 'completed')",
        [("a", "b"), ("b", "new"), ("c", "new")],
    )
    return conn


def test_a_path_back_to_the_new_command_is_refused(tmp_path: Path) -> None:
    conn = db(tmp_path)
    with pytest.raises(BusError) as caught:
        _check_cycle(conn, "new", ["a"])  # new -> a -> b -> new
    assert caught.value.code == "DEPENDENCY_CYCLE"
    with pytest.raises(BusError):
        _check_cycle(conn, "new", ["new"])  # itself


def test_finished_commands_and_unrelated_ones_are_no_cycle(tmp_path: Path) -> None:
    conn = db(tmp_path)
    _check_cycle(conn, "new", ["c"])  # c finished: its edges no longer hold anyone
    _check_cycle(conn, "other", ["a"])
