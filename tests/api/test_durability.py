"""Faults and upkeep, in-process on a real SQLite file: a database locked by another process
(503 STORAGE_BUSY), a full disk (507, reads keep working, recovery by itself), nothing
acknowledged that did not commit; retention; db stats and vacuum."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS, DATABASE, OBSERVABILITY, SETTINGS
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.telemetry import telemetry_path

from tests.api.bus_helpers import get_command, session_with_engine, submit
from tests.conftest import assert_envelope, create_session
from tests.dbtools import open_db
from tests.eventually import eventually


async def set_page_limit(store: Store, extra_pages: int | None) -> None:
    """Simulate a full disk (no room beyond the current pages + ``extra_pages``), or lift it."""

    def limit(conn: sqlite3.Connection) -> None:
        if extra_pages is None:
            conn.execute("PRAGMA max_page_count = 1073741823")
        else:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")

    await store.run_alone(limit)


async def publish(client: Any, sid: str, n: int, size: int = 0) -> Any:
    return await client.post(
        f"/api/sessions/{sid}/events", json={"event_type": "Fill", "data": {"n": n, "pad": "x" * size}}
    )


async def stored_fill_events(client: Any, sid: str) -> set[int]:
    resp = await client.get(f"/api/sessions/{sid}/events", params={"event_type": "Fill", "limit": "1000"})
    assert resp.status == 200, await resp.text()
    return {e["data"]["n"] for e in (await resp.json())["events"]}


# -- database locked by another process ---------------------------------------------------------


@pytest.mark.sqlite_only(reason="another process holding SQLite's file lock")
async def test_locked_database_answers_503_and_reads_keep_working(make_client):
    client = await make_client(LLMGINE_DB_BUSY_TIMEOUT="0.3")
    sid = (await create_session(client))["session_id"]
    other = sqlite3.connect(client.app[SETTINGS].database_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        resp = await client.post("/api/sessions", json={"name": "blocked"})
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert_envelope(await resp.json(), "STORAGE_BUSY")
        resp = await publish(client, sid, 1)
        assert resp.status == 503
        # WAL: readers are not blocked by another process's write lock.
        resp = await client.get(f"/api/sessions/{sid}")
        assert resp.status == 200
        resp = await client.get("/api/sessions")
        assert resp.status == 200 and all(s["name"] != "blocked" for s in (await resp.json())["sessions"])
    finally:
        other.execute("ROLLBACK")
        other.close()
    resp = await client.post("/api/sessions", json={"name": "after"})
    assert resp.status == 201
    assert await stored_fill_events(client, sid) == set()  # the refused event was not written


# -- disk full ------------------------------------------------------------------------------


@pytest.mark.sqlite_only(reason="a full disk is SQLite's page limit here")
async def test_disk_full_507_reads_work_and_recovers(make_client):
    client = await make_client()
    store = client.app[BUS].store
    sid = (await create_session(client))["session_id"]
    acked, refused = set(), set()
    await set_page_limit(store, 2)
    try:
        for n in range(400):
            resp = await publish(client, sid, n, size=2000)
            if resp.status == 201:
                acked.add(n)
            else:
                assert resp.status == 507, await resp.text()
                assert_envelope(await resp.json(), "INSUFFICIENT_STORAGE")
                refused.add(n)
                if len(refused) >= 3:
                    break
        assert refused, "the page limit never filled up"
        # Reads keep working while nothing can be written; exactly what was acknowledged is there.
        assert await stored_fill_events(client, sid) == acked
        resp = await client.get(f"/api/sessions/{sid}")
        assert resp.status == 200
        resp = await publish(client, sid, 999, size=2000)
        assert resp.status == 507
        # A monitor sees it: every write answered 507 while health said "healthy".
        assert (await (await client.get("/api/health")).json())["status"] == "degraded"
    finally:
        await set_page_limit(store, None)
    # Space is back: the same daemon writes again, with no restart.
    resp = await publish(client, sid, 1000)
    assert resp.status == 201
    assert (await (await client.get("/api/health")).json())["status"] == "healthy"
    assert await stored_fill_events(client, sid) == acked | {1000}
    integrity = sqlite3.connect(client.app[SETTINGS].database_path)
    assert integrity.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    integrity.close()


@pytest.mark.sqlite_only(reason="a full disk is SQLite's page limit here")
async def test_command_finishing_on_a_full_disk_is_recorded_once_space_returns(make_client):
    client = await make_client()
    store = client.app[BUS].store
    sid, _ = await session_with_engine(client)
    running = await submit(client, sid, "slow", delay_ms=200)
    await set_page_limit(store, 0)
    try:
        for size in (2000, 0):  # fill every page, whatever free space there was
            for n in range(2000):
                if (await publish(client, sid, n, size=size)).status == 507:
                    break
        await asyncio.sleep(0.4)  # the handler has finished by now; its result cannot be written
        record = await get_command(client, sid, running["command_id"])
        # Never reported as finished while its result is not stored (it is not, on this disk).
        db = sqlite3.connect(client.app[SETTINGS].database_path)
        stored = db.execute("SELECT status FROM commands WHERE command_id = ?", (running["command_id"],)).fetchone()[0]
        db.close()
        assert record["status"] == stored == "executing"
    finally:
        await set_page_limit(store, None)
    record = await get_command(client, sid, running["command_id"], wait=10)
    assert record["status"] == "completed"
    resp = await client.get(f"/api/sessions/{sid}/events", params={"event_type": "Command*"})
    kinds = [e["event_type"] for e in (await resp.json())["events"]]
    assert kinds == ["CommandStarted", "CommandResult"]
    assert len(await stored_fill_events(client, sid)) > 0


# -- retention ----------------------------------------------------------------------------------


async def count(client: Any, table: str) -> int:
    resp = await client.get("/api/db/stats")
    assert resp.status == 200
    return {t["name"]: t["rows"] for t in (await resp.json())["tables"]}[table]


async def count_at_most(client: Any, table: str, n: int) -> bool:
    return await count(client, table) <= n


async def test_event_retention_by_count_in_the_background(make_client):
    client = await make_client(LLMGINE_EVENT_RETENTION_ROWS="5", LLMGINE_RETENTION_INTERVAL="0.05")
    sid = (await create_session(client))["session_id"]
    for n in range(30):
        assert (await publish(client, sid, n)).status == 201
    await eventually(lambda: count_at_most(client, "events", 5), interval=0.05)
    assert await stored_fill_events(client, sid) == {25, 26, 27, 28, 29}
    stats = await (await client.get("/api/db/stats")).json()
    assert stats["retention"]["rules"]["events"] == {"days": 0, "rows": 5}
    assert stats["retention"]["pruned_since_start"]["events"] >= 25


async def test_retention_by_age_prunes_old_events_logs_and_spans(make_client):
    client = await make_client(LLMGINE_EVENT_RETENTION_DAYS="1", LLMGINE_RETENTION_INTERVAL="3600")
    sid = (await create_session(client))["session_id"]
    store = client.app[BUS].store
    old_iso = "2020-01-01T00:00:00.000000Z"

    def backdate(conn: sqlite3.Connection) -> None:
        # History written long ago: 1,200 events (more than one pruning batch), a log, a span.
        conn.executemany(
            "INSERT INTO events (event_id, session_id, event_type, data, metadata, source, timestamp)"
            " VALUES (?, ?, 'Old', '{}', '{}', 'api', ?)",
            [(f"old-{i}", sid, old_iso) for i in range(1200)],
        )
        conn.execute("UPDATE session_counts SET events = events + 1200 WHERE session_id = ?", (sid,))  # bus/events.py

    def backdate_telemetry(conn: sqlite3.Connection) -> None:  # in the telemetry database
        # Before what start-up logged and traced (ids follow time), so the old rows are first.
        conn.execute("DELETE FROM logs")
        conn.execute("DELETE FROM spans")
        conn.execute(
            "INSERT INTO logs (timestamp, level, levelno, logger, message, source)"
            " VALUES (?, 'info', 20, 't', 'old', 'daemon')",
            (old_iso,),
        )
        conn.execute(
            "INSERT INTO spans (trace_id, span_id, name, kind, start, start_unix, duration_ms, status)"
            " VALUES ('t', 's', 'old', 'internal', ?, 1577836800, 1, 'ok')",
            (old_iso,),
        )

    # Written before the new ones, as a real history would be (seq follows time).
    await store.write(lambda conn: conn.execute("DELETE FROM events"))
    await store.write(backdate)
    await client.app[OBSERVABILITY].telemetry.write(backdate_telemetry)
    for n in range(3):
        await publish(client, sid, n)
    deleted = await client.app[DATABASE].retention.run_once()
    assert deleted["events"] == 1200
    # The old log and span are gone (below). Which pass removed them is not asserted: the
    # background pass of start-up can meet them first on a loaded machine (seen once, -n 4).
    assert await stored_fill_events(client, sid) == {0, 1, 2}
    with open_db(client, telemetry=True) as db:
        assert db.execute("SELECT COUNT(*) FROM logs WHERE message = 'old'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM spans WHERE name = 'old'").fetchone()[0] == 0


# -- db stats and vacuum -----------------------------------------------------------------------


@pytest.mark.sqlite_only(reason="the database files' sizes and WAL (PostgreSQL: tests/e2e/test_postgres.py)")
async def test_db_stats_and_vacuum(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    for n in range(50):
        await publish(client, sid, n, size=4000)
    resp = await client.get("/api/db/stats")
    assert resp.status == 200
    stats = await resp.json()
    tables = {t["name"]: t for t in stats["tables"]}
    assert tables["events"]["rows"] >= 50 and tables["events"]["size_bytes"] > 50 * 4000
    assert tables["sessions"]["rows"] == 1 and "schema_migrations" in tables
    assert stats["journal_mode"] == "wal" and stats["synchronous"] == "full"
    assert stats["size_bytes"] == sum(stats["file_bytes"].values()) > 0
    # Logs and spans are in the telemetry database, listed with the main one's tables.
    assert tables["events"]["database"] == "main"
    assert tables["spans"]["database"] == tables["logs"]["database"] == "telemetry"
    assert stats["telemetry_path"] == str(telemetry_path(client.app[SETTINGS].database_path))
    assert stats["file_bytes"]["telemetry_db"] > 0 and "telemetry_wal" in stats["file_bytes"]

    resp = await client.delete(f"/api/sessions/{sid}", params={"purge": "true"})
    assert resp.status in (200, 204)
    resp = await client.post("/api/db/vacuum")
    assert resp.status == 200
    result = await resp.json()
    assert result["after_bytes"] < result["before_bytes"]
    assert result["reclaimed_bytes"] == result["before_bytes"] - result["after_bytes"]
    # Still a working database.
    assert (await client.post("/api/sessions", json={})).status == 201
    stats = await (await client.get("/api/db/stats")).json()
    assert {t["name"]: t["rows"] for t in stats["tables"]}["events"] <= 1  # the new session's


# -- telemetry in a file of its own ------------------------------------------------------------


def _old_database(path, logs: int, spans: bool = True, pruned_newest: int = 0) -> None:
    """A main database as every one was until telemetry got its own file: logs (and spans) in
    it, migration 40 recorded there. ``pruned_newest``: that many of the newest logs deleted
    since (their ids must still never be handed out again)."""
    from llmgine_daemon.store.migrations import apply_migrations
    from llmgine_daemon.store.obs_migrations import m040_logs_spans

    path.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path, isolation_level=None)
    apply_migrations(old)
    old.execute("BEGIN")
    m040_logs_spans(old)
    old.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (40, 'observability', '')")
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())  # young: retention keeps them
    old.executemany(
        "INSERT INTO logs (id, timestamp, level, levelno, logger, message, source)"
        " VALUES (?, ?, 'info', 20, 't', ?, 'client')",
        [(i, now, f"old log {i}") for i in range(1, logs + 1)],
    )
    old.execute("DELETE FROM logs WHERE id > ?", (logs - pruned_newest,))
    if spans:
        old.execute(
            "INSERT INTO spans (trace_id, span_id, name, kind, start, start_unix, duration_ms, status)"
            " VALUES ('a' || hex(randomblob(15)), 'b', 'old span', 'internal', ?, ?, 1, 'ok')",
            (now, time.time()),
        )
    else:
        old.execute("DROP TABLE spans")
    old.execute("COMMIT")
    old.close()


def _tables(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    finally:
        db.close()


@pytest.mark.sqlite_only(reason="moving logs and spans out of an old SQLite file")
async def test_logs_and_spans_of_a_database_from_before_the_split_are_moved(make_client, make_settings):
    path = make_settings().database_path
    _old_database(path, 6000)  # more than one copy batch

    client = await make_client(LLMGINE_LOG_RETENTION_ROWS="100000")
    logs = await (await client.get("/api/observability/logs", params={"limit": "1000"})).json()
    assert logs["logs"][0]["id"] >= 5001  # the newest kept, by their old ids
    old_ones = await (await client.get("/api/observability/logs", params={"after": "0", "limit": "5"})).json()
    assert [r["message"] for r in old_ones["logs"]] == [f"old log {i}" for i in range(1, 6)]
    assert not {"logs", "spans"} & _tables(path)
    main = sqlite3.connect(path)
    assert main.execute("SELECT COUNT(*) FROM schema_migrations WHERE version = 40").fetchone()[0] == 0
    main.close()
    tel = sqlite3.connect(telemetry_path(path))
    assert tel.execute("SELECT COUNT(*) FROM logs WHERE message LIKE 'old log %'").fetchone()[0] == 6000
    assert tel.execute("SELECT COUNT(*) FROM spans WHERE name = 'old span'").fetchone()[0] == 1
    tel.close()
    # New records continue after the old ids (AUTOINCREMENT saw them).
    resp = await client.post("/api/observability/logs", json={"level": "info", "message": "new"})
    assert (await resp.json())["id"] > 6000


@pytest.mark.sqlite_only(reason="moving logs and spans out of an old SQLite file")
async def test_moved_logs_never_reuse_the_ids_of_pruned_ones(make_client, make_settings):
    """The newest 5 of 10 were pruned before the move: the next ids are above 10, not from 6
    on, so a client that had seen id 10 (``?after=10``) sees the records after it."""
    path = make_settings().database_path
    _old_database(path, 10, spans=False, pruned_newest=5)  # and only one of the two tables
    client = await make_client()
    resp = await client.post("/api/observability/logs", json={"level": "info", "message": "after the move"})
    assert (await resp.json())["id"] > 10
    after = await (await client.get("/api/observability/logs", params={"after": "10"})).json()
    assert "after the move" in [r["message"] for r in after["logs"]]
    assert all(r["id"] > 10 for r in after["logs"])


@pytest.mark.sqlite_only(reason="moving logs and spans out of an old SQLite file")
async def test_a_move_cut_short_is_finished_at_the_next_start(make_client, make_settings):
    """A crash after some rows were copied and before the old tables were dropped: the next
    start copies the rest, skipping what is there, and nothing is doubled."""
    from llmgine_daemon.store.obs_migrations import m040_logs_spans

    path = make_settings().database_path
    _old_database(path, 3000)
    tel = sqlite3.connect(telemetry_path(path), isolation_level=None)  # the first 1,000 already copied
    tel.execute("BEGIN")
    m040_logs_spans(tel)
    tel.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    tel.execute("INSERT INTO schema_migrations VALUES (40, 'observability', '')")
    tel.execute(f"ATTACH '{path}' AS old")
    tel.execute("INSERT INTO logs SELECT * FROM old.logs WHERE id <= 1000")
    tel.execute("COMMIT")
    tel.execute("DETACH old")
    tel.close()

    client = await make_client()
    assert not {"logs", "spans"} & _tables(path)
    tel = sqlite3.connect(telemetry_path(path))
    assert tel.execute(
        "SELECT COUNT(*), COUNT(DISTINCT message) FROM logs WHERE message LIKE 'old log %'"
    ).fetchone() == (3000, 3000)
    tel.close()
    assert (await client.get("/api/health")).status == 200


async def test_a_telemetry_flush_does_not_hold_the_main_writer(make_client):
    """The telemetry database has its own lock: while its writer is held, requests' writes to
    the main database still commit."""
    client = await make_client()
    obs = client.app[OBSERVABILITY]
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    held = asyncio.Event()

    def hold(conn: sqlite3.Connection) -> None:  # a slow flush, in the telemetry store's thread
        loop.call_soon_threadsafe(held.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)

    slow = asyncio.create_task(obs.telemetry.write(hold, heavy=True))
    await held.wait()
    try:
        sid = (await asyncio.wait_for(create_session(client), 10))["session_id"]
        await asyncio.wait_for(publish(client, sid, 1), 10)
    finally:
        release.set()
        await slow
    assert await stored_fill_events(client, sid) == {1}
