"""A write the database could not take is 503 STORAGE_BUSY, and its message says what is known:
"locked by another process" only when the write waited for SQLite's lock (database.busy_timeout).
On PostgreSQL a server's statement_timeout, a deadlock or a serialization failure is busy too,
and was answered "locked by another process" all the same."""

from __future__ import annotations

import json

from aiohttp.test_utils import make_mocked_request
from llmgine_daemon.api.errors import envelope_for
from llmgine_daemon.store.errors import StorageBusy, StorageUnavailable


def answer(exc: Exception) -> tuple[int, dict]:
    resp = envelope_for(make_mocked_request("POST", "/api/sessions"), "r1", exc)
    assert resp.headers["Retry-After"] == "1"
    return resp.status, json.loads(resp.body)["error"]


def test_only_a_wait_for_the_lock_says_locked() -> None:
    status, error = answer(StorageBusy("the database is locked", busy_timeout=5.0, waited=5.0))
    assert status == 503 and error["code"] == "STORAGE_BUSY"
    assert error["message"] == "the database is busy (locked by another process); try again"
    assert error["details"]["setting"] == "database.busy_timeout"
    status, error = answer(StorageBusy("canceling statement due to statement timeout"))
    assert status == 503 and error["message"] == "the database is busy; try again", error
    status, error = answer(StorageUnavailable("connection refused"))
    assert status == 503 and error["message"] == "the database is not reachable; try again"
