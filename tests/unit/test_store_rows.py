"""Rows a write leaves to the store to insert (store/rows.py, ``submit(..., rows=True)``): on
SQLite those of a batch go in together with the COMMIT, off the event loop; seqs still follow
the order writes were queued in, and a failure fails the writes it must and no others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.bus.events import INSERT_EVENTS, insert_event
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.postgres import PgStore
from llmgine_daemon.store.rows import Deferred


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, home: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        store: Any = Store(home / "data" / "rows.db")
    else:
        store = PgStore(request.getfixturevalue("pg_url"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def rows_of(n: int, kind: str, event_id: str | None = None) -> list[tuple[Any, ...]]:
    return [(event_id or new_id(), None, kind, "{}", "{}", "bus", "2026-12-07T00:00:00Z", None) for _ in range(n)]


def deferred(rows: list[tuple[Any, ...]]) -> Any:
    """A write that leaves ``rows`` (events of no session) to the store; its value: their seqs."""

    def write(conn: Any) -> Deferred:
        return Deferred(INSERT_EVENTS, rows, [], lambda first: list(range(first, first + len(rows))))

    return write


async def stored_seqs(store: Any, rows: list[tuple[Any, ...]]) -> list[int]:
    found = []
    for row in rows:
        got = await store.fetchone("SELECT seq FROM events WHERE event_id = ?", (row[0],))
        found.append(got[0])
    return found


async def test_rows_left_to_the_store_keep_the_order_writes_were_queued_in(any_store):
    first, second, third = rows_of(2, "First"), rows_of(3, "Third"), rows_of(2, "Fourth")
    # Queued without a pause between them: one batch. The plain write in the middle must take a
    # seq after the rows queued before it, though those go in only when the store inserts them.
    futures = [
        any_store.submit(deferred(first), rows=True),
        any_store.submit(lambda conn: insert_event(conn, None, "Second", {}).seq),
        any_store.submit(deferred(second), rows=True),
        any_store.submit(deferred(third), rows=True),
    ]
    a, b, c, d = await asyncio.gather(*futures)
    assert a == await stored_seqs(any_store, first)
    assert c == await stored_seqs(any_store, second)
    assert d == await stored_seqs(any_store, third)
    assert a[-1] < b < c[0] and c[-1] < d[0]
    assert a == list(range(a[0], a[0] + 2)) and c == list(range(c[0], c[0] + 3))


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_rows_that_fail_before_a_later_write_fail_only_their_own(store, kind):
    taken = rows_of(1, "Taken")
    await store.submit(deferred(taken), rows=True)
    clash = rows_of(1, "Clash", event_id=taken[0][0])  # the same event id: refused by the index
    fine = rows_of(1, "Fine")
    futures = [
        store.submit(deferred(clash), rows=True),
        store.submit(lambda conn: insert_event(conn, None, "Plain", {}).seq),  # inserts the rows before it
        store.submit(deferred(fine), rows=True),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[0], Exception)
    assert isinstance(results[1], int) and results[2] == await stored_seqs(store, fine)
    rows = await store.fetchall("SELECT event_type FROM events ORDER BY seq")
    assert [r[0] for r in rows] == ["Taken", "Plain", "Fine"]


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_rows_that_fail_with_the_commit_fail_the_whole_batch(store, kind):
    """The rows of the batch's last writes go in with its COMMIT, in the writer's thread: if
    they cannot, the transaction is rolled back and no write of the batch is acknowledged."""
    taken = rows_of(1, "Taken")
    await store.submit(deferred(taken), rows=True)
    futures = [
        store.submit(lambda conn: insert_event(conn, None, "Plain", {}).seq),
        store.submit(deferred(rows_of(1, "Clash", event_id=taken[0][0])), rows=True),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    rows = await store.fetchall("SELECT event_type FROM events ORDER BY seq")
    assert [r[0] for r in rows] == ["Taken"]
    # The store goes on: the next batch commits.
    assert await store.submit(deferred(rows_of(1, "After")), rows=True)


def test_few_steps_do_what_executemany_does(tmp_path: Path) -> None:
    """``steps`` (the committing thread's way: few long statements, the GIL let go for each)
    inserts the same rows in the same order, with the same consecutive seqs, and adds the same
    counts (several rows of one key summed) as one ``executemany`` per statement."""
    import sqlite3

    from llmgine_daemon.store.rows import MAX_STEP_ROWS, execute, plan, run

    add = "UPDATE counts SET a = a + ?, b = b + ? WHERE k = ?"
    put = "INSERT INTO log (k, v) VALUES (?, ?)"
    tables = {}
    for way in ("many", "few"):
        conn = sqlite3.connect(tmp_path / f"{way}.db", isolation_level=None)
        conn.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT, v INTEGER)")
        conn.execute("CREATE TABLE counts (k TEXT PRIMARY KEY, a INTEGER, b INTEGER)")
        conn.executemany("INSERT INTO counts VALUES (?, 0, 0)", [(f"k{i}",) for i in range(700)])
        conn.execute("INSERT INTO log (k, v) VALUES ('before', 0)")
        rows = [(f"k{i % 700}", i) for i in range(2 * MAX_STEP_ROWS + 37)]
        adds = [(1, i, f"k{i % 700}") for i in range(1500)]
        statements = [(put, rows, True), (add, adds, False), (put, [], True)]
        firsts = run(conn, plan(statements)) if way == "few" else execute(conn, statements)
        tables[way] = (
            firsts,
            conn.execute("SELECT * FROM log").fetchall(),
            conn.execute("SELECT * FROM counts").fetchall(),
        )
        conn.close()
    assert tables["few"] == tables["many"]
    assert tables["few"][0] == [2, 0]
