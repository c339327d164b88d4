"""A write waits for another process's lock at most database.busy_timeout from when it was
queued, also when it is queued behind a batch that is itself waiting for (and will fail on) the
lock. A real file, locked by a second real connection; bounds are generous (2x), the error is
checked to be the deadline's."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from llmgine_daemon.store.db import StorageBusy, Store

TIMEOUT = 1.0


def insert(i: int):
    return lambda c: c.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at) VALUES (?, 'active', 'x', 'x')",
        (f"s{i}",),
    )


@pytest.fixture
async def store(home):
    s = Store(home / "data" / "t.db", busy_timeout=TIMEOUT)
    await s.open()
    yield s
    await s.close()


def stored(store: Store) -> set[str]:
    conn = sqlite3.connect(store.path)
    try:
        return {row[0] for row in conn.execute("SELECT session_id FROM sessions")}
    finally:
        conn.close()


async def expect_deadline(fut: asyncio.Future, queued_at: float) -> float:
    with pytest.raises(StorageBusy) as err:
        await fut
    elapsed = asyncio.get_running_loop().time() - queued_at
    assert err.value.busy_timeout == TIMEOUT
    assert "database.busy_timeout" in str(err.value)
    assert err.value.waited is not None and err.value.waited >= TIMEOUT - 0.01
    return elapsed


async def test_writes_queued_behind_a_waiting_batch_keep_their_own_deadline(store):
    loop = asyncio.get_running_loop()
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        first = asyncio.ensure_future(expect_deadline(store.submit(insert(1)), loop.time()))
        await asyncio.sleep(TIMEOUT / 2)  # the first batch now waits for the lock
        later_at = loop.time()
        later = [store.submit(insert(n)) for n in (2, 3)] + [store.submit(insert(4), heavy=True)]
        elapsed = await asyncio.gather(first, *(expect_deadline(fut, later_at) for fut in later))
        assert max(elapsed) < 2 * TIMEOUT, elapsed
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The lock is gone: writes go through again; none of the refused ones was stored.
    await store.write(insert(5))
    assert stored(store) == {"s5"}


async def test_a_steady_stream_of_writes_each_gives_up_within_the_bound(store):
    """Writes keep arriving while the lock is held: each one fails at its own deadline, so the
    queue drains instead of every write paying for the batches ahead of it."""
    loop = asyncio.get_running_loop()
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        watchers = []
        for n in range(8):
            # Each write is watched from the moment it is queued (its elapsed time is its own).
            watchers.append(asyncio.ensure_future(expect_deadline(store.submit(insert(n)), loop.time())))
            await asyncio.sleep(TIMEOUT / 4)
        elapsed = await asyncio.gather(*watchers)
        assert max(elapsed) < 2 * TIMEOUT, elapsed
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert stored(store) == set()


async def test_the_lock_released_in_time_lets_waiting_writes_commit(store):
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    first = store.submit(insert(1))
    await asyncio.sleep(TIMEOUT / 4)
    second = store.submit(insert(2))
    await asyncio.sleep(TIMEOUT / 4)
    other.execute("ROLLBACK")
    other.close()
    await first
    await second
    assert stored(store) == {"s1", "s2"}
