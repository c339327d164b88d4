"""Schedules on the real app: validation, firing (each due time once), pause/resume, missed
firings across an in-process restart, and two schedulers racing for one firing."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.bus.schedules import Schedules
from llmgine_daemon.protocol import parse_iso, to_iso

from tests.api.bus_helpers import DUMMY, create_engine, session_with_engine
from tests.conftest import assert_documented, assert_envelope, create_session
from tests.eventually import eventually

COMMAND = {"command_type": DUMMY, "parameters": {"prompt": "tick"}}


async def schedule(client: Any, sid: str, **when: Any) -> dict[str, Any]:
    resp = await client.post("/api/schedules", json={"session_id": sid, "command": COMMAND, **when})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def fired(client: Any, sid: str, schedule_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/sessions/{sid}/commands", params={"limit": "1000"})
    commands = (await resp.json())["commands"]
    return [c for c in commands if c["metadata"].get("schedule_id") == schedule_id]


@pytest.mark.parametrize(
    ("when", "field"),
    [
        ({"cron": "* * *"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # valid, but never fires (it was a 500)
        ({"cron": "0 0 31 4,6,9,11 *", "timezone": "Europe/Berlin"}, "cron"),
        ({"cron": "*/5 * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"cron": "*/5 * * * *", "timezone": "../../etc/passwd"}, "timezone"),
        ({"cron": "*/5 * * * *", "every": 60}, "cron"),
        ({}, "cron"),
        ({"every": 0.5}, "every"),
        ({"every": "5 parsecs"}, "every"),
        ({"every": "400d"}, "every"),
        ({"at": "tomorrow"}, "at"),
        ({"at": "2001-01-01T00:00:00Z"}, "at"),
    ],
)
async def test_bad_timing_is_a_validation_error_naming_the_field(app_client, when, field):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post("/api/schedules", json={"session_id": sid, "command": COMMAND, **when})
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field


async def test_a_bad_command_or_session_is_refused_at_creation(app_client):
    sid = (await create_session(app_client))["session_id"]
    bad = {"command_type": DUMMY, "metadata": {"priority": "urgent"}}
    resp = await app_client.post("/api/schedules", json={"session_id": sid, "command": bad, "every": 60})
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"].startswith("command.")
    resp = await app_client.post("/api/schedules", json={"session_id": "nope", "command": COMMAND, "every": 60})
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")


async def test_a_command_type_nothing_handles_is_refused_at_creation(app_client):
    # It was stored, then failed at every firing ("no handler ...": last_error only).
    sid = (await create_session(app_client))["session_id"]
    for command_type in ("Nonexistent", DUMMY):  # DummyEngineCommand: no engine in the session yet
        body = {"session_id": sid, "command": {"command_type": command_type}, "every": 60}
        resp = await app_client.post("/api/schedules", json=body)
        assert resp.status == 404
        details = assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")["details"]
        assert details["type"] == command_type and details["session_id"] == sid
    await assert_documented(app_client, "POST", "/api/schedules", 404, "HANDLER_NOT_FOUND")
    listed = await (await app_client.get("/api/schedules", params={"session_id": sid})).json()
    assert listed["total"] == 0
    resp = await app_client.post(
        "/api/schedules", json={"session_id": "nope", "command": {"command_type": "X"}, "every": 60}
    )
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    await create_engine(app_client, sid)  # now the session has a handler for it
    await schedule(app_client, sid, every=60)


async def test_cron_in_a_time_zone_shows_its_next_firings(app_client):
    sid, _ = await session_with_engine(app_client)
    s = await schedule(app_client, sid, cron="30 9 * * 1-5", timezone="Europe/Berlin", missed="run_once")
    assert s["kind"] == "cron" and s["status"] == "active" and s["missed"] == "run_once"
    times = [parse_iso(t) for t in s["upcoming"]]
    assert len(times) == 3 and times == sorted(times) and times[0] == parse_iso(s["next_due"])
    from zoneinfo import ZoneInfo

    for t in times:
        local = t.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 30) and local.weekday() < 5
    got = await (await app_client.get(f"/api/schedules/{s['schedule_id']}")).json()
    assert got["upcoming"] == s["upcoming"]
    listed = await (await app_client.get("/api/schedules", params={"session_id": sid})).json()
    assert [x["schedule_id"] for x in listed["schedules"]] == [s["schedule_id"]]
    assert (await app_client.delete(f"/api/schedules/{s['schedule_id']}")).status == 204
    assert_envelope(await (await app_client.get(f"/api/schedules/{s['schedule_id']}")).json(), "NOT_FOUND")


async def test_every_second_fires_each_due_time_once_and_pause_stops_it(app_client):
    sid, _ = await session_with_engine(app_client)
    started = time.monotonic()
    s = await schedule(app_client, sid, every=1)
    sched = s["schedule_id"]
    await eventually(lambda: _at_least(app_client, sid, sched, 3), timeout=30)
    paused = await (await app_client.post(f"/api/schedules/{sched}/pause")).json()
    elapsed = time.monotonic() - started
    assert paused["status"] == "paused" and paused["next_due"] is None and paused["upcoming"] == []
    commands = await fired(app_client, sid, sched)
    dues = [c["metadata"]["schedule_due"] for c in commands]
    assert len(dues) == len(set(dues)), "a due time fired twice"
    assert 3 <= len(commands) <= elapsed + 1  # at most one firing per elapsed second
    assert paused["fire_count"] == len(commands)
    assert all(c["command_type"] == DUMMY and c["parameters"] == {"prompt": "tick"} for c in commands)
    # Resumed: it fires again, from the next second after now (nothing made up for the pause).
    resumed = await (await app_client.post(f"/api/schedules/{sched}/resume")).json()
    assert resumed["status"] == "active" and parse_iso(resumed["next_due"]) > parse_iso(paused["last_fired_at"])
    await eventually(lambda: _at_least(app_client, sid, sched, len(commands) + 1), timeout=30)
    later = await fired(app_client, sid, sched)
    new = [c for c in later if c["command_id"] not in {x["command_id"] for x in commands}]
    assert all(c["metadata"]["schedule_due"] >= resumed["next_due"] for c in new)
    await app_client.post(f"/api/schedules/{sched}/pause")


async def _at_least(client: Any, sid: str, sched: str, n: int) -> bool:
    return len(await fired(client, sid, sched)) >= n


async def test_at_fires_once_then_is_done(app_client):
    sid, _ = await session_with_engine(app_client)
    at = to_iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    s = await schedule(app_client, sid, at=at)
    assert s["next_due"] == at and s["upcoming"] == [at]

    async def done() -> dict[str, Any] | None:
        got = await (await app_client.get(f"/api/schedules/{s['schedule_id']}")).json()
        return got if got["status"] == "done" else None

    got = await eventually(done, timeout=20)
    assert got["fire_count"] == 1 and got["next_due"] is None
    assert len(await fired(app_client, sid, s["schedule_id"])) == 1
    resp = await app_client.post(f"/api/schedules/{s['schedule_id']}/resume")
    assert_envelope(await resp.json(), "CONFLICT")


@pytest.mark.parametrize(("missed", "expected"), [("skip", 0), ("run_once", 1)])
async def test_firings_missed_while_down_follow_the_policy(make_client, missed, expected):
    client = await make_client()
    sid, _ = await session_with_engine(client)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    s = await schedule(client, sid, at=to_iso(at), missed=missed)
    await client.close()  # the daemon is down when the firing comes due
    await eventually(lambda: dt.datetime.now(dt.UTC) > at + dt.timedelta(seconds=0.2), timeout=10)
    client = await make_client()

    async def settled() -> dict[str, Any] | None:
        got = await (await client.get(f"/api/schedules/{s['schedule_id']}")).json()
        return got if got["status"] == "done" else None

    got = await eventually(settled, timeout=20)
    assert got["fire_count"] == expected
    assert len(await fired(client, sid, s["schedule_id"])) == expected


async def test_two_schedulers_never_fire_one_due_time_twice(app_client):
    sid, _ = await session_with_engine(app_client)
    bus = app_client.app[BUS]
    s = await schedule(app_client, sid, every=3600)
    others = [Schedules(bus) for _ in range(3)]
    # Make it due now, behind the app's own scheduler's back, then let four schedulers race.
    await bus.store.write(
        lambda conn: conn.execute(
            "UPDATE schedules SET next_due = ? WHERE schedule_id = ?",
            (to_iso(dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)), s["schedule_id"]),
        )
    )
    for other in others:
        other.started_at = dt.datetime.min.replace(tzinfo=dt.UTC)  # not "missed while down"
    await asyncio.gather(*(o.run_due() for o in others), bus.schedules.run_due())
    assert len(await fired(app_client, sid, s["schedule_id"])) == 1
    got = await (await app_client.get(f"/api/schedules/{s['schedule_id']}")).json()
    assert got["fire_count"] == 1


async def test_session_tokens_and_the_end_of_a_session(make_client):
    client = await make_client(authenticated=False)
    from tests.conftest import authorize

    authorize(client)
    mine, theirs = await create_session(client), await create_session(client)
    for session in (mine, theirs):
        await create_engine(client, session["session_id"])
    s = await schedule(client, theirs["session_id"], every=3600)
    client.session.headers.pop("Authorization")
    token = {"X-Session-Token": mine["session_token"]}
    body = {"session_id": theirs["session_id"], "command": COMMAND, "every": 60}
    assert_envelope(await (await client.post("/api/schedules", json=body, headers=token)).json(), "FORBIDDEN")
    body["session_id"] = mine["session_id"]
    assert (await client.post("/api/schedules", json=body, headers=token)).status == 201
    listed = await (await client.get("/api/schedules", headers=token)).json()
    assert [x["session_id"] for x in listed["schedules"]] == [mine["session_id"]]
    resp = await client.post(f"/api/schedules/{s['schedule_id']}/pause", headers=token)
    assert_envelope(await resp.json(), "NOT_FOUND")
    authorize(client)
    assert (await client.delete(f"/api/sessions/{theirs['session_id']}")).status == 200
    got = await (await client.get(f"/api/schedules/{s['schedule_id']}")).json()
    assert got["status"] == "done" and got["last_error"] == "the session ended"


async def test_if_exists_reuses_or_refuses_the_same_schedule(app_client):
    # An addition: a setup script run twice made two schedules firing the same command twice.
    # ?if_exists=reuse answers the one there (200), ?if_exists=error is 409; another command,
    # timing or session is another schedule, and without the parameter a twin is made as before.
    sid, _ = await session_with_engine(app_client)
    body = {"session_id": sid, "command": COMMAND, "every": "1h"}
    first = await schedule(app_client, sid, every="1h")
    resp = await app_client.post("/api/schedules?if_exists=reuse", json=body)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["schedule_id"] == first["schedule_id"]
    resp = await app_client.post("/api/schedules?if_exists=error", json=body)
    assert resp.status == 409
    assert assert_envelope(await resp.json(), "CONFLICT")["details"]["schedule_id"] == first["schedule_id"]
    for other in ({"every": "2h"}, {"command": {**COMMAND, "parameters": {"prompt": "tock"}}}):
        resp = await app_client.post("/api/schedules?if_exists=reuse", json={**body, **other})
        assert resp.status == 201, await resp.text()
    assert (await app_client.post("/api/schedules", json=body)).status == 201
    listed = (await (await app_client.get("/api/schedules", params={"session_id": sid})).json())["schedules"]
    assert len(listed) == 4


async def test_at_is_one_instant_however_written_and_said_as_every_time_is(app_client):
    """`at` takes RFC 3339's spellings (an offset, a lower-case `z`) and the schedule says it as
    every time in an answer is, UTC with a Z: `spec` was `2030-01-01T08:00:00+00:00`, and `...z`
    was refused."""
    sid, _ = await session_with_engine(app_client)
    said = "2030-01-01T08:00:00.000000Z"
    made = []
    for at in ("2030-01-01T10:00:00+02:00", "2030-01-01T08:00:00z", "2030-01-01t08:00:00Z"):
        created = await schedule(app_client, sid, at=at)
        assert created["spec"] == said and created["next_due"] == said, (at, created)
        made.append(created["schedule_id"])
    # Ones stored before (`...+00:00`) are still the same schedule to `if_exists=reuse`.
    await app_client.server.app[BUS].store.write(
        lambda conn: conn.execute(
            "UPDATE schedules SET spec = ? WHERE session_id = ?", ("2030-01-01T08:00:00+00:00", sid)
        )
    )
    body = {"session_id": sid, "command": COMMAND, "at": "2030-01-01T08:00:00Z"}
    resp = await app_client.post("/api/schedules", params={"if_exists": "reuse"}, json=body)
    assert resp.status == 200, await resp.text()
    reused = await resp.json()
    assert reused["schedule_id"] in made and reused["spec"] == said
    listed = await (await app_client.get("/api/schedules", params={"session_id": sid})).json()
    assert {s["spec"] for s in listed["schedules"]} == {said}
