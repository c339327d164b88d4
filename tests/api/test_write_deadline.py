"""Through the API: requests whose writes meet a database locked by another process answer
503 STORAGE_BUSY at their own deadline (database.busy_timeout from when the write was queued),
also those queued behind a batch already waiting for the lock. Generous bounds (2x)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from llmgine_daemon.api.keys import SETTINGS

from tests.conftest import assert_envelope, create_session

TIMEOUT = 1.0


@pytest.mark.sqlite_only(reason="another process holding SQLite's file lock")
async def test_queued_requests_give_up_at_their_own_deadline(make_client):
    client = await make_client(LLMGINE_DB_BUSY_TIMEOUT=str(TIMEOUT))
    sid = (await create_session(client))["session_id"]
    loop = asyncio.get_running_loop()

    async def publish(n: int) -> tuple[float, int, dict]:
        sent = loop.time()
        resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "Blocked", "data": {"n": n}})
        return loop.time() - sent, resp.status, await resp.json()

    other = sqlite3.connect(client.app[SETTINGS].database_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(publish(0))
        await asyncio.sleep(TIMEOUT / 2)  # its write now waits for the lock
        answers = await asyncio.gather(first, *(publish(n) for n in range(1, 4)))
    finally:
        other.execute("ROLLBACK")
        other.close()
    for elapsed, status, body in answers:
        assert status == 503, body
        error = assert_envelope(body, "STORAGE_BUSY")
        assert error["details"]["setting"] == "database.busy_timeout"
        assert error["details"]["busy_timeout"] == TIMEOUT
        assert error["details"]["waited"] >= TIMEOUT - 0.01
        assert elapsed < 2 * TIMEOUT, answers
    resp = await client.get(f"/api/sessions/{sid}/events", params={"event_type": "Blocked"})
    assert (await resp.json())["events"] == []
    # Unlocked: writes work again.
    resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "After", "data": {}})
    assert resp.status == 201
