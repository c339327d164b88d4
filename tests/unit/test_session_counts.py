"""Session counts kept by triggers (migration 5) and, for inserted events, by the statements
that insert them (bus/events.py, migration 130), the bytes of the events too (migration 132):
exact after every kind of write, and filled in for a database that had sessions before the
migrations."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import llmgine_daemon
from llmgine_daemon.bus.commands.records import insert_command, insert_commands
from llmgine_daemon.bus.events import insert_event, insert_events
from llmgine_daemon.protocol import Command
from llmgine_daemon.store.migrations import EVENT_BYTES, SESSION_COUNTS_RECOUNT, apply_migrations

EVENT_IDS: dict[tuple[str, int], str] = {}


def kept(conn):
    sql = "SELECT session_id, commands, events, engines, tools, handlers, event_bytes FROM session_counts"
    return {r[0]: r[1:] for r in conn.execute(sql + " ORDER BY session_id")}


def counted(conn):
    size = f"(SELECT COALESCE(SUM({EVENT_BYTES.format(row='e')}), 0) FROM events e WHERE e.session_id = s.session_id)"
    sql = f"SELECT s.session_id, {SESSION_COUNTS_RECOUNT.format(sid='s.session_id')}, {size} FROM sessions s"
    return {r[0]: r[1:] for r in conn.execute(sql + " ORDER BY s.session_id")}


def session(conn, sid):
    conn.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES (?, 'active', 'x', 'x')",
        (sid,),
    )


def event(conn, sid, n):
    EVENT_IDS[(sid, n)] = insert_event(conn, sid, "E", {"n": "x" * n}, source="test").event_id


def command(conn, sid, n):
    insert_command(conn, record(sid, f"c{n}", "completed"))


def record(sid, name, status, batch_id=None):
    return Command(
        command_id=f"{sid}-{name}",
        status=status,
        created_at="x",
        session_id=sid,
        command_type="C",
        parameters={},
        metadata={},
        batch_id=batch_id,
    )


def engine(conn, sid, n, status="active"):
    conn.execute(
        "INSERT INTO engines (engine_id, session_id, engine_type, status, created_at) VALUES (?, ?, 'T', ?, 'x')",
        (f"{sid}-g{n}", sid, status),
    )


def tool(conn, sid, name):
    conn.execute(
        "INSERT OR REPLACE INTO tools (session_id, name, function_code, created_at) VALUES (?, ?, 'code', 'x')",
        (sid, name),
    )


def handler(conn, sid, n):
    conn.execute(
        "INSERT INTO handlers (handler_id, session_id, kind, type, code, created_at)"
        " VALUES (?, ?, 'event', 'E', 'code', 'x')",
        (f"{sid}-h{n}", sid),
    )


def test_every_write_keeps_counts_exact(tmp_path):
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    apply_migrations(conn)
    steps = [
        lambda: session(conn, "a"),
        lambda: session(conn, "b"),
        lambda: [event(conn, s, i) for s in "ab" for i in range(5)],
        lambda: insert_events(conn, "a", [("E", {"k": "v" * 9}, {"m": 1}, "t")] * 7, timestamp="x", trace_id=None),
        lambda: [command(conn, "a", i) for i in range(3)],
        lambda: insert_commands(conn, [record(s, f"m{i}", "queued", "batch") for s, i in ("a0", "a1", "b2")]),
        lambda: [engine(conn, "a", i) for i in range(3)] + [engine(conn, "b", 0, "stopped")],
        lambda: conn.execute("UPDATE engines SET status = 'stopped' WHERE engine_id = 'a-g0'"),
        lambda: conn.execute("UPDATE engines SET status = 'active' WHERE engine_id = 'b-g0'"),
        lambda: conn.execute("DELETE FROM engines WHERE engine_id = 'a-g1'"),
        lambda: [tool(conn, "a", "t1"), tool(conn, "a", "t2"), tool(conn, "a", "t1")],  # a replace
        lambda: [handler(conn, "a", i) for i in range(2)] + [handler(conn, None, 9)],  # one global
        lambda: conn.execute("UPDATE handlers SET session_id = 'b' WHERE handler_id = 'a-h1'"),
        lambda: conn.execute("UPDATE events SET session_id = 'b' WHERE event_id = ?", (EVENT_IDS[("a", 0)],)),
        lambda: event(conn, "nosession", 0),  # an event outside any stored session
        lambda: conn.execute("DELETE FROM events WHERE session_id = 'a' AND seq % 2 = 0"),  # like retention
        lambda: conn.execute("DELETE FROM commands WHERE command_id = 'a-c1'"),
        lambda: conn.execute("DELETE FROM tools WHERE session_id = 'a' AND name = 't2'"),
        lambda: [conn.execute(f"DELETE FROM {t} WHERE session_id = 'b'") for t in ("events", "engines", "handlers")],
        lambda: conn.execute("DELETE FROM sessions WHERE session_id = 'b'"),  # a purge's last step
        lambda: session(conn, "nosession"),  # counts what it already has
    ]
    for i, step in enumerate(steps):
        conn.execute("BEGIN IMMEDIATE")
        step()
        conn.execute("COMMIT")
        assert kept(conn) == counted(conn), f"after step {i}"
    assert kept(conn)["a"][:5] == (4, 6, 1, 1, 1)  # 3 + 2 commands, 1 deleted; 12 events, 1 moved, 5 of 11 deleted
    assert kept(conn)["a"][5] > 0
    assert kept(conn)["nosession"] == (0, 1, 0, 0, 0, len('{"n":""}{}'))
    assert "b" not in kept(conn)


def test_migration_fills_counts_of_existing_sessions(tmp_path):
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    apply_migrations(conn)
    # Back to a database from before migration 5, with history in it.
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE session_counts")
    conn.execute("DELETE FROM schema_migrations WHERE version IN (5, 132)")
    for sid in ("a", "b", "c"):
        session(conn, sid)
    for i in range(4):
        conn.execute(  # as code of that time wrote them
            "INSERT INTO events (event_id, session_id, event_type, source, timestamp, data, metadata)"
            " VALUES (?, 'a', 'E', 't', 'x', ?, '{}')",
            (f"old{i}", "x" * i),
        )
        conn.execute(
            "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
            " VALUES (?, 'b', 'C', 'completed', 'x')",
            (f"oldc{i}",),
        )
    engine(conn, "a", 0)
    engine(conn, "a", 1, "stopped")
    tool(conn, "c", "t")
    handler(conn, "c", 0)

    assert apply_migrations(conn) == [5, 132]
    assert kept(conn) == counted(conn)
    bytes_a = sum(i + 2 for i in range(4))
    assert kept(conn) == {"a": (0, 4, 1, 0, 0, bytes_a), "b": (4, 0, 0, 0, 0, 0), "c": (0, 0, 0, 1, 1, 0)}


def inserting(table: str) -> list[str]:
    root = Path(llmgine_daemon.__file__).parent
    statement = re.compile(rf"INSERT\s+INTO\s+{table}\b", re.IGNORECASE)
    return sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py") if statement.search(path.read_text(encoding="utf-8"))
    )


def test_events_and_commands_are_inserted_only_where_they_are_counted():
    """No trigger counts inserted events or commands: every statement that inserts them is in
    one module, which counts them in the same transaction."""
    # bus/events.py's statements; store/postgres.py only recognises them (to add RETURNING seq).
    assert inserting("events") == ["bus/events.py", "store/postgres.py"]
    assert inserting("commands") == ["bus/commands/records.py"]


def test_event_bytes_are_utf8_bytes_and_migration_133_recounts_them(tmp_path):
    """security.limits.max_event_bytes_per_session counts bytes: m132 counted characters
    (``length`` of a TEXT), so a "€" (3 bytes) counted 1 and the budget let 3x its bytes in."""
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    apply_migrations(conn)
    session(conn, "a")
    conn.execute("BEGIN")
    insert_event(conn, "a", "E", {"t": "\u20ac" * 10}, source="test")
    insert_events(conn, "a", [("E", {"t": "\U0001f389" * 5}, {}, "test")] * 2, timestamp="x", trace_id=None)
    conn.execute("COMMIT")
    stored = conn.execute(
        "SELECT SUM(length(CAST(data AS BLOB)) + length(CAST(metadata AS BLOB))) FROM events WHERE session_id = 'a'"
    ).fetchone()[0]
    assert kept(conn)["a"][5] == stored == counted(conn)["a"][5]
    assert stored >= 30 + 2 * 20  # the characters' bytes, not their number
    # A database m132 counted in characters is recounted, and its triggers count bytes.
    conn.execute("UPDATE session_counts SET event_bytes = 1")
    conn.execute("DELETE FROM schema_migrations WHERE version = 133")
    assert apply_migrations(conn) == [133]
    assert kept(conn)["a"][5] == stored
    conn.execute("DELETE FROM events WHERE session_id = 'a' AND data LIKE '%\u20ac%'")
    assert kept(conn) == counted(conn)
