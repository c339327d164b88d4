"""The group-commit writer: batching, isolation of failures, durability on return."""

from __future__ import annotations

import asyncio
import sqlite3
import stat

import pytest
from llmgine_daemon.store.db import Store

from tests.eventually import eventually


async def test_concurrent_writes_share_transactions(store):
    def insert(i):
        return lambda c: (
            c.execute(
                "INSERT INTO sessions (session_id, status, created_at, last_activity_at)"
                " VALUES (?, 'active', 'x', 'x')",
                (f"s{i}",),
            ).lastrowid
        )

    results = await asyncio.gather(*(store.write(insert(i)) for i in range(200)))
    assert len(set(results)) == 200
    # 200 writes queued at once commit in far fewer transactions than writes.
    assert store.writes == 200 and store.transactions < 200
    count = await store.fetchone("SELECT COUNT(*) FROM sessions")
    assert count == (200,)


async def test_a_failing_write_fails_alone(store):
    def good(i):
        return lambda c: c.execute(
            "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES (?, 'active', 'x', 'x')",
            (f"g{i}",),
        )

    def bad(c):
        c.execute(
            "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES ('b', 'active', 'x', 'x')"
        )
        raise ValueError("nope")

    results = await asyncio.gather(store.write(good(1)), store.write(bad), store.write(good(2)), return_exceptions=True)
    assert isinstance(results[1], ValueError)
    rows = await store.fetchall("SELECT session_id FROM sessions ORDER BY session_id")
    assert rows == [("g1",), ("g2",)]  # the failed write's own insert was rolled back


async def test_committed_when_acknowledged(store, home):
    await store.write(
        lambda c: c.execute(
            "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES ('ack', 'active', 'x', 'x')"
        )
    )
    # Another connection (another process, as far as SQLite knows) sees it at once.
    with sqlite3.connect(home / "data" / "t.db") as other:
        assert other.execute("SELECT COUNT(*) FROM sessions WHERE session_id='ack'").fetchone() == (1,)


async def test_wal_mode_file_modes_and_migrations(store, home):
    path = home / "data" / "t.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600
    assert await store.fetchone("PRAGMA journal_mode") == ("wal",)
    versions = await store.fetchall("SELECT version FROM schema_migrations")
    assert (1,) in versions


async def test_close_flushes_queued_writes(home):
    s = Store(home / "data" / "f.db")
    await s.open()
    futures = [
        asyncio.ensure_future(
            s.write(
                lambda c, i=i: c.execute(
                    "INSERT INTO sessions (session_id, status, created_at, last_activity_at)"
                    " VALUES (?, 'active', 'x', 'x')",
                    (f"f{i}",),
                )
            )
        )
        for i in range(50)
    ]
    await asyncio.sleep(0)
    await s.close()
    await asyncio.gather(*futures)
    with sqlite3.connect(home / "data" / "f.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone() == (50,)


async def test_statements_run_on_the_loop_and_heavy_writes_in_the_thread(store):
    """Ordinary writes run on the event loop's thread (no GIL hand-off per statement); a heavy
    one runs whole in the connection's thread, in a transaction of its own."""
    import threading

    seen: dict[str, int] = {}

    def mark(name):
        def fn(c):
            seen[name] = threading.get_ident()
            return c.execute("SELECT 1").fetchone()[0]

        return fn

    before = store.transactions
    light, heavy, light2 = await asyncio.gather(
        store.write(mark("light")), store.write(mark("heavy"), heavy=True), store.write(mark("light2"))
    )
    assert light == heavy == light2 == 1
    loop_thread = threading.get_ident()
    assert seen["light"] == seen["light2"] == loop_thread
    assert seen["heavy"] != loop_thread
    assert store.transactions - before == 3  # the heavy one took nothing along


async def test_the_checkpointer_copies_the_wal_outside_commits(store):
    def insert(i):
        return lambda c: c.execute(
            "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES (?, 'active', 'x', 'x')",
            (f"c{i}",),
        )

    assert await store.read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 1000
    writer_setting = store._raw(store._writer_conn).execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert writer_setting == 0  # never inside a COMMIT
    await asyncio.gather(*(store.write(insert(i)) for i in range(50)))
    # The checkpointer runs every CHECKPOINT_INTERVAL_S.
    await eventually(lambda: store._ckpt_done == store.transactions, interval=0.05)
    # Every committed frame is in the database file now: a new checkpoint has nothing left.
    busy, log_frames, done = await store.read(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
    assert busy == 0 and log_frames == done


def test_recovery_queries_use_the_partial_indexes(tmp_path):
    """Migration 4 indexes only active and batched commands; the start-up lookups must still
    find them through an index (SQLite uses a partial index only when the query repeats its
    WHERE term: bus/commands.ACTIVE)."""
    from llmgine_daemon.bus.commands import ACTIVE
    from llmgine_daemon.store.migrations import apply_migrations

    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    apply_migrations(conn)
    plans = {
        "commands_active": f"SELECT * FROM commands WHERE {ACTIVE} AND status = 'queued' ORDER BY rowid",
        "commands_batch": "SELECT * FROM commands WHERE batch_id = 'b' ORDER BY rowid",
    }
    for index, sql in plans.items():
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert f"USING INDEX {index}" in plan, (sql, plan)
    # Only active commands have an entry: a finished one costs no write in the index.
    conn.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES ('s', 'active', 'x', 'x')"
    )
    for i, status in enumerate(("completed", "queued", "failed")):
        conn.execute(
            "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
            " VALUES (?, 's', 'T', ?, 'x')",
            (f"c{i}", status),
        )
    assert conn.execute(f"SELECT COUNT(*) FROM commands INDEXED BY commands_active WHERE {ACTIVE}").fetchone()[0] == 1
    conn.close()


def test_lookups_of_unfinished_commands_use_their_partial_index(tmp_path):
    """Migration 137 indexes a session's commands by status for unfinished ones only (an eager
    command, stored finished, writes no page of it); every query of unfinished commands by
    session repeats the index's WHERE term, so it seeks rather than scanning the session."""
    from llmgine_daemon.bus.capacity import _PENDING
    from llmgine_daemon.bus.commands.records import UNFINISHED, list_filter
    from llmgine_daemon.bus.engine_registry import RUNNING_OF_TYPE
    from llmgine_daemon.observability.metrics_view import QUEUED_IN_SESSION
    from llmgine_daemon.protocol import UNFINISHED_STATUSES
    from llmgine_daemon.store.migrations import apply_migrations

    # A status added to the protocol's unfinished ones needs a new migration (and this term).
    assert UNFINISHED == f"status IN ({', '.join(repr(s) for s in UNFINISHED_STATUSES)})"
    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    apply_migrations(conn)
    listing = " AND ".join(list_filter("s", ["queued", "waiting_approval"], None, None)[0])
    for sql in (_PENDING, RUNNING_OF_TYPE, QUEUED_IN_SESSION, f"SELECT * FROM commands WHERE {listing}"):
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql.replace("?", "'s'")))
        assert "INDEX commands_session_unfinished (session_id=?" in plan, (sql, plan)
    finished = " AND ".join(list_filter("s", ["failed"], None, None)[0])
    sql = f"EXPLAIN QUERY PLAN SELECT * FROM commands WHERE {finished}".replace("?", "'s'")
    plan = " ".join(row[3] for row in conn.execute(sql))
    assert "commands_session" in plan and "unfinished" not in plan, plan
    conn.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES ('s', 'active', 'x', 'x')"
    )
    for i, status in enumerate(("completed", "queued", "blocked", "failed", "waiting_approval", "cancelled")):
        conn.execute(
            "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
            " VALUES (?, 's', 'T', ?, 'x')",
            (f"c{i}", status),
        )
    indexed = conn.execute(f"SELECT COUNT(*) FROM commands INDEXED BY commands_session_unfinished WHERE {UNFINISHED}")
    assert indexed.fetchone()[0] == 3
    conn.execute("UPDATE commands SET status = 'completed' WHERE command_id = 'c1'")
    assert conn.execute(QUEUED_IN_SESSION.replace("?", "'s'")).fetchone()[0] == 0
    conn.close()


async def test_point_reads_on_the_loop_see_every_acknowledged_write(store):
    """A point read runs on the loop's read-only connection and sees what was committed before
    it: each acknowledged write, at once."""
    for i in range(20):
        await store.write(
            lambda c, i=i: c.execute(
                "INSERT INTO sessions (session_id, status, created_at, last_activity_at)"
                " VALUES (?, 'active', 'x', 'x')",
                (f"p{i}",),
            )
        )
        got = await store.read_point(lambda c, i=i: c.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
        assert got == i + 1
    assert store.loop_reads == 20 and store.loop_reads_moved == 0
    # Read-only: a write through it fails as a write to a read-only database would.
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        await store.read_point(lambda c: c.execute("DELETE FROM sessions"))
    assert (await store.fetchone("SELECT COUNT(*) FROM sessions"))[0] == 20


async def test_a_long_point_read_moves_to_the_reader_thread(store):
    """Past the budget of VM instructions the statement is interrupted on the loop and the read
    runs again in the reader's thread: same answer, and the loop was held only for the budget."""
    await store.write(
        lambda c: c.executemany(
            "INSERT INTO events (event_id, session_id, event_type, source, timestamp) VALUES (?, 'big', 'E', 't', 'x')",
            [(f"e{i}",) for i in range(30_000)],
        ),
        heavy=True,
    )
    count = "SELECT COUNT(*) FROM events WHERE session_id = 'big'"
    assert await store.read_point(lambda c: c.execute(count).fetchone()[0]) == 30_000
    assert store.loop_reads_moved == 1 and store.loop_reads == 0
    # A short one right after stays on the loop (the interrupted statement left nothing open).
    one = "SELECT event_type FROM events WHERE event_id = 'e7'"
    assert await store.read_point(lambda c: c.execute(one).fetchone()[0]) == "E"
    assert store.loop_reads == 1
    # An error that is not about time or locks is the read's own: raised, not retried.
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.read_point(lambda c: c.execute("SELECT * FROM nowhere").fetchall())
    assert store.loop_reads_moved == 1


async def test_point_reads_after_close_fail_cleanly(home):
    from llmgine_daemon.store.db import StorageError

    s = Store(home / "data" / "closed.db")
    await s.open()
    await s.close()
    with pytest.raises(StorageError, match="closed"):
        await s.read_point(lambda c: c.execute("SELECT 1").fetchone())


def test_migration_138_counts_the_engine_memory_already_stored(tmp_path):
    """Rows stored before migration 138 count in their engine's memory_chars (the budget of
    security.limits.max_engine_memory_per_session, engines/memory.py): the migration
    run again on a database whose engines have rows and no column yet."""
    from llmgine_daemon.store.migrations import apply_migrations

    conn = sqlite3.connect(tmp_path / "m138.db", isolation_level=None)
    apply_migrations(conn)
    conn.execute("ALTER TABLE engines DROP COLUMN memory_chars")
    conn.execute("DELETE FROM schema_migrations WHERE version = 138")
    conn.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES ('s', 'active', 'x', 'x')"
    )
    for engine in ("e1", "e2"):
        conn.execute(
            "INSERT INTO engines (engine_id, session_id, engine_type, status, created_at)"
            " VALUES (?, 's', 'SinglePassEngine', 'running', 'x')",
            (engine,),
        )
    rows = [("e1", "user", "h\u20acllo", None), ("e1", "assistant", "", '[{"id": "c"}]'), ("e1", "tool", "12", None)]
    for engine, role, content, calls in rows:
        conn.execute(
            "INSERT INTO engine_messages (engine_id, role, content, tool_calls, created_at, dropped_seq)"
            " VALUES (?, ?, ?, ?, 'x', ?)",
            (engine, role, content, calls, 7 if role == "tool" else None),
        )
    assert apply_migrations(conn) == [138]
    counted = dict(conn.execute("SELECT engine_id, memory_chars FROM engines ORDER BY engine_id").fetchall())
    assert counted == {"e1": 5 + len('[{"id": "c"}]') + 2, "e2": 0}
    conn.close()
