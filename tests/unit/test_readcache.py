"""bus/readcache.py on a real SQLite store: an answer is kept only while nothing was committed:
by the daemon's writer (seen at once), or by another process (seen within the check interval)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from llmgine_daemon.bus.readcache import ReadCache
from llmgine_daemon.store.base import BaseStore
from llmgine_daemon.store.db import EXTERNAL_CHECK_S, Store


def insert(session_id: str) -> Any:
    return lambda c: c.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES (?, 'active', 'x', 'x')",
        (session_id,),
    )


class Reads:
    """A point read of the number of sessions, counting how often it really ran."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs = 0

    async def __call__(self) -> dict[str, int]:
        self.runs += 1
        row = await self.store.read_point(lambda c: c.execute("SELECT COUNT(*) FROM sessions").fetchone())
        return {"sessions": row[0]}


async def test_kept_while_nothing_is_committed(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    await store.write(insert("a"))
    assert await cache.get("k", reads) == {"sessions": 1}
    assert await cache.get("k", reads) == {"sessions": 1}
    assert reads.runs == 1 and (cache.hits, cache.misses) == (1, 1)
    # Another key is read once, and kept beside the first.
    await cache.get("other", reads)
    await cache.get("other", reads)
    assert reads.runs == 2


async def test_a_commit_of_the_writer_is_seen_at_once(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    assert await cache.get("k", reads) == {"sessions": 0}
    await store.write(insert("a"))  # acknowledged = committed: the next read sees it
    assert await cache.get("k", reads) == {"sessions": 1}
    assert reads.runs == 2


async def test_a_write_run_alone_is_seen_at_once(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    assert await cache.get("k", reads) == {"sessions": 0}
    await store.run_alone(insert("a"))
    assert await cache.get("k", reads) == {"sessions": 1}


async def test_a_commit_of_another_process_is_seen_within_the_check_interval(store):
    """Nothing of llmgine writes behind the daemon; a person with sqlite3 may. Their commit is
    looked for every EXTERNAL_CHECK_S (store/db.py), not on every read."""
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    assert await cache.get("k", reads) == {"sessions": 0}
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        insert("b")(other)
    finally:
        other.close()
    await asyncio.sleep(EXTERNAL_CHECK_S)  # the next read looks again
    assert await cache.get("k", reads) == {"sessions": 1}


async def test_a_rolled_back_write_keeps_the_answer_right(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)

    def fails(conn: sqlite3.Connection) -> None:
        insert("c")(conn)
        raise RuntimeError("rolled back")

    assert await cache.get("k", reads) == {"sessions": 0}
    with pytest.raises(RuntimeError):
        await store.write(fails)
    assert await cache.get("k", reads) == {"sessions": 0}


async def test_callers_get_copies(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    first = await cache.get("k", reads)
    first["sessions"] = 99  # a caller filling in its own copy (as a fork does)
    assert await cache.get("k", reads) == {"sessions": 0}
    second = await cache.get("k", reads)
    second["sessions"] = 42
    assert await cache.get("k", reads) == {"sessions": 0}
    assert reads.runs == 1


async def test_bounded(store):
    cache: ReadCache[dict[str, int]] = ReadCache(store, max_kept=3)
    reads = Reads(store)
    for key in "abcdef":
        await cache.get(key, reads)
    for key in "abcdef":
        await cache.get(key, reads)
    assert reads.runs == 6 + 3  # only the first three were kept


async def test_a_store_that_cannot_tell_keeps_nothing(store):
    class Unknown(BaseStore):
        """A store without a version (as PostgreSQL's: other nodes write without telling)."""

    cache: ReadCache[dict[str, int]] = ReadCache(Unknown(1.0))
    reads = Reads(store)
    for _ in range(3):
        await cache.get("k", reads)
    assert reads.runs == 3 and cache.hits == 0


async def test_a_new_loop_connection_forgets_everything(store):
    """data_version is per connection: a replaced loop connection starts its count afresh, so
    the number of connections opened is part of the version."""
    cache: ReadCache[dict[str, int]] = ReadCache(store)
    reads = Reads(store)
    await store.write(lambda c: [insert(f"s{i}")(c) for i in range(3000)])
    await cache.get("k", reads)
    before, moved = store.version(), store.loop_reads_moved
    store.loop_read_steps = 1  # the next point read runs past its budget: the connection is replaced
    await store.read_point(lambda c: c.execute("SELECT * FROM sessions").fetchall())
    assert store.loop_reads_moved == moved + 1
    assert store.version() != before
    await cache.get("k", reads)
    assert reads.runs == 2
