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


def test_the_walk_reads_nothing_for_a_new_command_and_each_blocked_command_once(tmp_path: Path) -> None:
    """A session token stored layers of a hundred blocked commands, each waiting for all of the
    layer before, then more commands waiting for the last layer: the walk expanded a command
    once per path to it, about half a second of the store's one writer per submission (another
    session's publish took 1.9 s instead of 1 ms)."""
    conn = db(tmp_path)
    layers = [[f"l{k}-{i}" for i in range(100)] for k in range(4)]
    conn.execute("BEGIN")  # one commit, not one per row
    conn.executemany(
        "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
        " VALUES (?, 's', 'T', 'blocked', '2026-01-01T00:00:00Z')",
        [(cid,) for layer in layers for cid in layer],
    )
    conn.executemany(
        "INSERT INTO command_after (command_id, after_id, policy) VALUES (?, ?, 'completed')",
        [(cid, dep) for k in range(1, len(layers)) for cid in layers[k] for dep in layers[k - 1]],
    )
    conn.execute("COMMIT")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    _check_cycle(conn, "fresh", layers[-1])  # nothing waits for a new command: nothing to walk
    assert len(statements) == 1, statements
    # Something waits for "named" (a finished command: no cycle): the walk goes through every
    # layer, a statement per layer (and per 500 commands of one), not per path.
    conn.execute("INSERT INTO command_after (command_id, after_id, policy) VALUES ('c', 'named', 'completed')")
    statements.clear()
    _check_cycle(conn, "named", layers[-1])
    assert len(statements) <= 1 + len(layers) + 1, len(statements)
    # ...and a path back through all of them is still found.
    conn.execute("INSERT INTO command_after (command_id, after_id, policy) VALUES ('l0-0', 'named', 'completed')")
    with pytest.raises(BusError) as caught:
        _check_cycle(conn, "named", layers[-1])
    assert caught.value.code == "DEPENDENCY_CYCLE"
