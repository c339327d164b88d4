"""Spec section 1: sessions, over the real app and a real SQLite file."""

from __future__ import annotations

from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS

from tests.conftest import assert_envelope, create_session
from tests.dbtools import open_db


async def test_create_minimal_and_full(app_client):
    resp = await app_client.post("/api/sessions")  # no body at all: everything is optional
    assert resp.status == 201
    bare = await resp.json()
    assert bare["status"] == "active" and bare["name"] is None and bare["metadata"] == {}
    assert bare["created_at"].endswith("Z")

    full = await create_session(
        app_client, name="optional-session-name", metadata={"user_id": "user123", "project": "p"}
    )
    assert full["name"] == "optional-session-name"
    assert full["metadata"] == {"user_id": "user123", "project": "p"}
    assert full["session_id"] != bare["session_id"]


async def test_get_has_counts_and_activity(app_client):
    created = await create_session(app_client, name="x")
    resp = await app_client.get(f"/api/sessions/{created['session_id']}")
    assert resp.status == 200
    got = await resp.json()
    assert got["session_id"] == created["session_id"]
    assert got["last_activity_at"] >= got["created_at"]
    # SessionStarted is recorded in the session's own event log.
    assert got["counts"] == {"commands": 0, "events": 1, "engines": 0, "tools": 0, "handlers": 0}
    # The creation's answer has the same shape as a GET's (its usage was null).
    shown_once = {"session_token", "last_activity_at"}  # the token, in the creation's only
    assert {k: v for k, v in created.items() if k not in shown_once} == {
        k: v for k, v in got.items() if k not in shown_once
    }, (created, got)


async def test_list_newest_first_paging_and_status_filter(app_client):
    ids = [(await create_session(app_client, name=f"s{i}"))["session_id"] for i in range(5)]
    resp = await app_client.get("/api/sessions", params={"limit": 2, "offset": 1})
    page = await resp.json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [s["session_id"] for s in page["sessions"]] == [ids[3], ids[2]]

    await app_client.delete(f"/api/sessions/{ids[0]}")
    closed = await (await app_client.get("/api/sessions", params={"status": "closed"})).json()
    active = await (await app_client.get("/api/sessions", params={"status": "active"})).json()
    assert [s["session_id"] for s in closed["sessions"]] == [ids[0]]
    assert active["total"] == 4


async def test_delete_ends_session_keeps_history(app_client, home):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.delete(f"/api/sessions/{sid}")
    assert resp.status == 200
    ended = await resp.json()
    assert ended["status"] == "closed" and ended["ended_at"]
    # History stays readable, with SessionStarted and SessionEnded in the log.
    again = await (await app_client.get(f"/api/sessions/{sid}")).json()
    assert again["status"] == "closed" and again["counts"]["events"] == 2
    with open_db(app_client) as conn:
        types = [r[0] for r in conn.execute("SELECT event_type FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
    assert types == ["SessionStarted", "SessionEnded"]
    # Ending it again is harmless and returns the same record.
    assert (await (await app_client.delete(f"/api/sessions/{sid}")).json())["ended_at"] == ended["ended_at"]


async def test_delete_cancels_queued_commands_and_releases(app_client, home):
    sid = (await create_session(app_client))["session_id"]
    with open_db(app_client) as conn:
        conn.execute(
            "INSERT INTO commands (command_id, session_id, command_type, status, created_at)"
            " VALUES ('c1', ?, 'T', 'queued', '2024-01-01T00:00:00Z')",
            (sid,),
        )
        conn.execute(
            "INSERT INTO tools (session_id, name, function_code, created_at)"
            " VALUES (?, 't', 'def t(): pass', '2024-01-01T00:00:00Z')",
            (sid,),
        )
    await app_client.delete(f"/api/sessions/{sid}")
    with open_db(app_client) as conn:
        assert conn.execute("SELECT status FROM commands WHERE command_id = 'c1'").fetchone()[0] == "cancelled"
        assert conn.execute("SELECT COUNT(*) FROM tools WHERE session_id = ?", (sid,)).fetchone()[0] == 0


async def test_purge_removes_everything(app_client, home):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.delete(f"/api/sessions/{sid}", params={"purge": "true"})
    assert resp.status == 204
    resp = await app_client.get(f"/api/sessions/{sid}")
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    with open_db(app_client) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE session_id = ?", (sid,)).fetchone()[0] == 0


async def test_unknown_session_is_404(app_client):
    for method in ("get", "delete"):
        resp = await getattr(app_client, method)("/api/sessions/00000000-0000-4000-8000-000000000000")
        assert resp.status == 404
        error = assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
        assert error["details"]["session_id"] == "00000000-0000-4000-8000-000000000000"


async def test_bad_session_id_in_path_is_rejected(app_client):
    resp = await app_client.get("/api/sessions/..%2F..%2Fetc")
    assert resp.status in (404, 422)
    assert (await resp.json())["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND")


async def test_sessions_survive_restart(make_client):
    first = await make_client()
    sid = (await create_session(first, name="keep"))["session_id"]
    await first.close()
    second = await make_client()
    got = await (await second.get(f"/api/sessions/{sid}")).json()
    assert got["name"] == "keep" and got["status"] == "active"


async def test_validation_errors_name_the_field(app_client):
    cases = [
        ({"name": 5}, "name"),
        ({"metadata": "nope"}, "metadata"),
        ({"nmae": "typo"}, "nmae"),
    ]
    for body, field in cases:
        resp = await app_client.post("/api/sessions", json=body)
        assert resp.status == 422, body
        error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
        assert error["details"]["field"] == field
        assert error["details"]["issue"]


async def test_a_name_is_at_most_256_characters_created_or_forked(app_client):
    """A fork's name was at most 256 characters while a created session took any (a 5,000
    character name, up to the body limit): both are 256 now."""
    longest = await create_session(app_client, name="n" * 256)
    assert longest["name"] == "n" * 256
    sid = longest["session_id"]
    for path in ("/api/sessions", f"/api/sessions/{sid}/fork"):
        resp = await app_client.post(path, json={"name": "n" * 257})
        assert resp.status == 422, (path, await resp.text())
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "name"
        resp = await app_client.post(path, json={"name": "m" * 256})
        assert resp.status == 201, (path, await resp.text())


async def test_an_empty_or_blank_name_is_refused_created_or_forked(app_client):
    """``{"name": ""}`` made a session named "" (and "  " one named so): a name no listing
    tells from none and ``-S NAME`` cannot find. Refused as other bad names are; spaces inside
    or around a name are the client's to choose."""
    sid = (await create_session(app_client))["session_id"]
    for path in ("/api/sessions", f"/api/sessions/{sid}/fork"):
        for name in ("", " ", "\t\n ", "\u3000"):
            resp = await app_client.post(path, json={"name": name})
            assert resp.status == 422, (path, name, await resp.text())
            details = assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]
            assert details == {
                "field": "name",
                "issue": "must not be empty or only whitespace (at most 256 characters)",
            }
        resp = await app_client.post(path, json={"name": " a b "})
        assert resp.status == 201, await resp.text()
        made = await resp.json()
        assert made.get("session", made)["name"] == " a b "  # (a fork's answer holds its session)
    resp = await app_client.get("/api/sessions", params={"limit": "1000"})
    assert all((s["name"] or "x").strip() for s in (await resp.json())["sessions"])


async def test_list_query_validation(app_client):
    for params, field in (
        ({"limit": "x"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"status": "weird"}, "status"),
    ):
        resp = await app_client.get("/api/sessions", params=params)
        assert resp.status == 422
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field


PUBLISH_TOOL = '''
async def publish(event_type: str):
    """Publish an event"""
    return {"ok": True}
'''
NOOP_HANDLER = """
async def handle(event, ctx):
    return None
"""


def counts_in_file(client, sid):
    """The session's counts, straight from the database (five plain queries)."""
    with open_db(client) as conn:

        def one(sql):
            return conn.execute(sql, (sid,)).fetchone()[0]

        return {
            "commands": one("SELECT COUNT(*) FROM commands WHERE session_id = ?"),
            "events": one("SELECT COUNT(*) FROM events WHERE session_id = ?"),
            "engines": one("SELECT COUNT(*) FROM engines WHERE session_id = ? AND status != 'stopped'"),
            "tools": one("SELECT COUNT(*) FROM tools WHERE session_id = ?"),
            "handlers": one("SELECT COUNT(*) FROM handlers WHERE session_id = ?"),
        }


async def test_counts_are_exact_for_every_kind(app_client, home):
    """Every count nonzero, a stopped engine not counted, another session's rows not counted;
    and the same figures after the session ends (engines stopped, tools and handlers gone)."""
    sid, other = [(await create_session(app_client))["session_id"] for _ in range(2)]
    engines = []
    for s in (sid, sid, other):
        resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": s})
        assert resp.status == 201, await resp.text()
        engines.append((await resp.json())["engine_id"])
        if len(engines) == 1:  # one engine per command type: stop it before the next
            assert (await app_client.delete(f"/api/engines/{engines[0]}")).status in (200, 204)
    for i in range(3):
        resp = await app_client.post(
            f"/api/sessions/{sid}/commands?wait=30",
            json={"command_type": "DummyEngineCommand", "parameters": {"prompt": str(i)}},
        )
        assert resp.status == 200, await resp.text()
    for _ in range(4):
        resp = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "Bench", "data": {}})
        assert resp.status == 201, await resp.text()
    resp = await app_client.post(f"/api/sessions/{sid}/tools", json={"name": "publish", "function_code": PUBLISH_TOOL})
    assert resp.status == 201, await resp.text()
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events", json={"event_type": "Nothing", "handler_function": NOOP_HANDLER}
    )
    assert resp.status == 201, await resp.text()

    db = app_client
    got = (await (await app_client.get(f"/api/sessions/{sid}")).json())["counts"]
    assert got == counts_in_file(db, sid)
    assert got["commands"] == 3 and got["engines"] == 1 and got["tools"] == 1 and got["handlers"] == 1
    assert got["events"] >= 1 + 3 + 4
    other_counts = (await (await app_client.get(f"/api/sessions/{other}")).json())["counts"]
    assert other_counts == counts_in_file(db, other)
    assert other_counts["engines"] == 1 and other_counts["commands"] == 0

    ended = await (await app_client.delete(f"/api/sessions/{sid}")).json()
    assert ended["counts"] == counts_in_file(db, sid)
    assert ended["counts"]["engines"] == ended["counts"]["tools"] == ended["counts"]["handlers"] == 0
    again = (await (await app_client.get(f"/api/sessions/{sid}")).json())["counts"]
    assert again == ended["counts"] and again["events"] == got["events"] + 1


@pytest.mark.sqlite_only(reason="point reads on the event loop (and moved off it) are the SQLite store's")
async def test_a_long_session_reads_right_on_and_off_the_loop(app_client, home):
    """30,000 events: the session's counts are one lookup (on the loop); counting them for a page
    of the listing is a scan, which leaves the loop for the reader's thread - same answers."""
    sid = (await create_session(app_client))["session_id"]
    store = app_client.server.app[BUS].store

    def bulk(c: Any) -> None:
        c.executemany(
            "INSERT INTO events (event_id, session_id, event_type, source, timestamp) VALUES (?, ?, 'Bulk', 't', 'x')",
            [(f"bulk-{i}", sid) for i in range(30_000)],
        )
        c.execute("UPDATE session_counts SET events = events + 30000 WHERE session_id = ?", (sid,))  # bus/events.py

    await store.write(bulk, heavy=True)
    on_loop, moved = store.loop_reads, store.loop_reads_moved
    got = await (await app_client.get(f"/api/sessions/{sid}")).json()
    assert got["counts"]["events"] == 30_001
    assert store.loop_reads == on_loop + 1 and store.loop_reads_moved == moved

    resp = await app_client.get(f"/api/sessions/{sid}/events", params={"limit": 3, "offset": 29_999})
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    assert page["total"] == 30_001
    assert [e["event_id"] for e in page["events"]] == ["bulk-29998", "bulk-29999"]
    assert store.loop_reads_moved == moved + 1

    # A short session's page stays on the loop.
    small = (await create_session(app_client))["session_id"]
    page = await (await app_client.get(f"/api/sessions/{small}/events")).json()
    assert page["total"] == 1 and page["events"][0]["event_type"] == "SessionStarted"
    assert store.loop_reads_moved == moved + 1

    # Missing ones are a 404 either way, never a 500.
    for path in ("/api/sessions/nope", "/api/sessions/nope/events", f"/api/sessions/{sid}/events/nope"):
        resp = await app_client.get(path)
        assert resp.status == 404, (path, await resp.text())


async def test_counts_without_their_row_are_counted(app_client, home):
    """Should a session have no session_counts row (every session gets one from a trigger), its
    GET counts the rows instead of failing or reporting nothing."""
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "X", "data": {}})
    assert resp.status == 201
    await app_client.server.app[BUS].store.write(
        lambda c: c.execute("DELETE FROM session_counts WHERE session_id = ?", (sid,))
    )
    got = await (await app_client.get(f"/api/sessions/{sid}")).json()
    assert got["counts"] == counts_in_file(app_client, sid)
    assert got["counts"]["events"] == 2


async def test_a_long_sessions_purge_lets_other_sessions_write_meanwhile(app_client):
    """A session token can fill its session with a million events in a minute (batches of
    DummyEngine commands) and then purge it: one write deleted them all while every other
    session's writes waited (14 s for 800,000 events). The purge deletes them in steps; another
    session publishes while it is under way."""
    import asyncio

    from llmgine_daemon.bus.sessions import PURGE_BATCH

    from tests.eventually import eventually

    big = (await create_session(app_client))["session_id"]
    other = (await create_session(app_client))["session_id"]
    store = app_client.server.app[BUS].store
    total = 50 * PURGE_BATCH

    def bulk(c: Any) -> None:
        c.executemany(
            "INSERT INTO events (event_id, session_id, event_type, source, timestamp) VALUES (?, ?, 'Bulk', 't', 'x')",
            [(f"bulk-{i}", big) for i in range(total)],
        )

    await store.write(bulk, heavy=True)

    async def left() -> int:
        row = await store.fetchone("SELECT COUNT(*) FROM events WHERE session_id = ?", (big,))
        return int(row[0]) if row else 0

    purge = asyncio.create_task(app_client.delete(f"/api/sessions/{big}", params={"purge": "true"}))
    try:
        await eventually(lambda: _partly(left, total), message="part of the session's events deleted", interval=0.005)
        resp = await app_client.post(f"/api/sessions/{other}/events", json={"event_type": "Meanwhile"})
        assert resp.status == 201, await resp.text()
        assert not purge.done() and await left() > 0, "the other session's write waited for the whole purge"
    finally:
        resp = await purge
    assert resp.status == 204
    assert await left() == 0
    assert (await app_client.get(f"/api/sessions/{big}")).status == 404


async def _partly(left: Any, total: int) -> bool:
    return 0 < await left() < total


async def test_if_exists_reuses_or_refuses_an_active_name(app_client):
    # An addition to the spec's create: ?if_exists=reuse|error, for setup scripts that run
    # twice (`session create --name X --reuse`); without it a second session of the name is
    # created, as the spec's endpoint does.
    first = await create_session(app_client, name="setup")
    resp = await app_client.post("/api/sessions?if_exists=reuse", json={"name": "setup", "metadata": {"x": 1}})
    assert resp.status == 200, await resp.text()
    again = await resp.json()
    assert again["session_id"] == first["session_id"] and again["metadata"] == {}
    assert again["session_token"] is None  # nothing minted: `session token` mints one
    resp = await app_client.post("/api/sessions?if_exists=error", json={"name": "setup"})
    assert resp.status == 409
    assert assert_envelope(await resp.json(), "CONFLICT")["details"]["session_id"] == first["session_id"]
    listed = await (await app_client.get("/api/sessions")).json()
    assert [s["session_id"] for s in listed["sessions"] if s["name"] == "setup"] == [first["session_id"]]
    # An ended session does not hold its name; the spec's default still makes another.
    await app_client.delete(f"/api/sessions/{first['session_id']}")
    resp = await app_client.post("/api/sessions?if_exists=error", json={"name": "setup"})
    assert resp.status == 201
    resp = await app_client.post("/api/sessions", json={"name": "setup"})
    assert resp.status == 201


async def test_if_exists_without_a_name_creates_and_needs_a_known_value(app_client):
    # No session can have no name: each creates one (a 422 there was a schema-valid request
    # refused, which the fuzzer reports).
    for if_exists in ("reuse", "error"):
        first = await app_client.post(f"/api/sessions?if_exists={if_exists}", json={})
        again = await app_client.post(f"/api/sessions?if_exists={if_exists}", json={"name": None})
        assert first.status == again.status == 201
        assert (await first.json())["session_id"] != (await again.json())["session_id"]
    resp = await app_client.post("/api/sessions?if_exists=maybe", json={"name": "n"})
    assert resp.status == 422
    assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_concurrent_reuse_makes_one_session(app_client):
    import asyncio

    async def create() -> str:
        resp = await app_client.post("/api/sessions?if_exists=reuse", json={"name": "race"})
        assert resp.status in (200, 201), await resp.text()
        return (await resp.json())["session_id"]

    ids = await asyncio.gather(*(create() for _ in range(8)))
    assert len(set(ids)) == 1
