"""Retries and dead letters (#20): a user-code command handler that fails twice then
succeeds, delays recorded, dead letters listed and run again, a restart in the middle of a
delay. Real sandbox workers, the real runner, SQLite in a temp dir."""

from __future__ import annotations

import textwrap
from typing import Any

from llmgine_daemon.protocol import parse_iso

from tests.api.bus_helpers import events, finished
from tests.conftest import assert_envelope, create_session

FLAKY = textwrap.dedent("""
    def flaky(command):
        if command.attempt < 3:
            raise RuntimeError(f"attempt {command.attempt} fails")
        return {"attempt": command.attempt}
""")
ALWAYS_FAILS = textwrap.dedent("""
    def broken(command):
        raise RuntimeError("never works")
""")


async def handler(client: Any, sid: str, command_type: str, code: str) -> None:
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/commands", json={"command_type": command_type, "handler_function": code}
    )
    assert resp.status == 201, await resp.text()


async def submit(client: Any, sid: str, command_type: str, metadata: dict[str, Any], expect: int = 202) -> Any:
    resp = await client.post(f"/api/sessions/{sid}/commands", json={"command_type": command_type, "metadata": metadata})
    assert resp.status in ((200, 202) if expect == 202 else (expect,)), await resp.text()
    return await resp.json()


def of(evts: list[dict[str, Any]], cid: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in evts if e["event_type"] == kind and e["data"].get("command_id") == cid]


async def test_fails_twice_then_succeeds_with_exponential_delays(app_client):
    sid = (await create_session(app_client))["session_id"]
    await handler(app_client, sid, "Flaky", FLAKY)
    backoff = {"type": "exponential", "base": 0.2, "cap": 10}
    cmd = await submit(app_client, sid, "Flaky", {"retries": 3, "backoff": backoff})
    done = await finished(app_client, sid, cmd["command_id"])
    assert done["status"] == "completed" and done["result"] == {"attempt": 3} and done["attempt"] == 3, done
    evts = await events(app_client, sid)
    started = of(evts, cmd["command_id"], "CommandStarted")
    retrying = of(evts, cmd["command_id"], "CommandRetrying")
    results = of(evts, cmd["command_id"], "CommandResult")
    assert [e["data"]["attempt"] for e in started] == [1, 2, 3]
    assert [(e["data"]["attempt"], e["data"]["next_attempt"]) for e in retrying] == [(1, 2), (2, 3)]
    assert [e["data"]["delay_s"] for e in retrying] == [0.2, 0.4]  # base, then doubled
    assert all(e["data"]["status"] == "failed" and "fails" in e["data"]["error"]["message"] for e in retrying)
    assert [(e["data"]["attempt"], e["data"]["status"]) for e in results] == [(3, "completed")]
    # Each next attempt started no earlier than the due time its CommandRetrying recorded.
    for retry, nxt in zip(retrying, started[1:], strict=True):
        assert parse_iso(nxt["timestamp"]) >= parse_iso(retry["data"]["retry_at"])


async def test_exhausted_retries_are_dead_letters_and_run_again(app_client):
    sid = (await create_session(app_client))["session_id"]
    await handler(app_client, sid, "Broken", ALWAYS_FAILS)
    await handler(app_client, sid, "Flaky", FLAKY)
    dead = await submit(app_client, sid, "Broken", {"retries": 1, "backoff": {"type": "fixed", "base": 0.05}})
    once = await submit(app_client, sid, "Broken", {})  # no retries: failed, not dead
    assert (await finished(app_client, sid, dead["command_id"]))["attempt"] == 2
    assert (await finished(app_client, sid, once["command_id"]))["status"] == "failed"
    listed = await (await app_client.get(f"/api/sessions/{sid}/commands", params={"dead": "true"})).json()
    assert [c["command_id"] for c in listed["commands"]] == [dead["command_id"]]
    # retry_on: an error code not listed is final at once.
    other = await submit(app_client, sid, "Broken", {"retries": 5, "retry_on": ["PROVIDER_RATE_LIMITED"]})
    assert (await finished(app_client, sid, other["command_id"]))["attempt"] == 1
    # Run again: the dead letters, then a failed one by id (same id, attempt + 1).
    resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={"dead": True})
    again = await resp.json()
    assert resp.status == 200 and [c["command_id"] for c in again["commands"]] == [dead["command_id"]]
    assert again["commands"][0]["status"] == "queued" and again["commands"][0]["attempt"] == 3
    ended = await finished(app_client, sid, dead["command_id"])
    assert ended["status"] == "failed" and ended["attempt"] == 3  # one more attempt: its budget is spent
    flaky = await submit(app_client, sid, "Flaky", {})
    assert (await finished(app_client, sid, flaky["command_id"]))["attempt"] == 1
    for _ in range(2):
        resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={"command_ids": [flaky["command_id"]]})
        assert resp.status == 200
        await finished(app_client, sid, flaky["command_id"])
    assert (await finished(app_client, sid, flaky["command_id"]))["status"] == "completed"
    # A completed command cannot run again; nothing named is a validation error.
    resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={"command_ids": [flaky["command_id"]]})
    assert resp.status == 409
    assert_envelope(await resp.json(), "CONFLICT")
    resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={})
    assert resp.status == 422


async def test_bad_policies_are_refused(app_client):
    sid = (await create_session(app_client))["session_id"]
    await handler(app_client, sid, "Broken", ALWAYS_FAILS)
    for metadata, field in (
        ({"retries": -1}, "metadata.retries"),
        ({"retries": 1, "backoff": "linear"}, "metadata.backoff"),
        ({"retries": 1, "backoff": {"type": "fixed", "base": "x"}}, "metadata.backoff.base"),
        ({"retries": 1, "retry_on": "X"}, "metadata.retry_on"),
    ):
        body = await submit(app_client, sid, "Broken", metadata, expect=422)
        assert assert_envelope(body, "VALIDATION_ERROR")["details"]["field"] == field


async def test_defaults_per_type_from_settings(make_client):
    client = await make_client(LLMGINE_RETRY_DEFAULTS='{"Flaky": {"retries": 2, "backoff": "fixed"}}')
    sid = (await create_session(client))["session_id"]
    await handler(client, sid, "Flaky", FLAKY)
    cmd = await submit(client, sid, "Flaky", {})
    done = await finished(client, sid, cmd["command_id"])
    assert done["status"] == "completed" and done["attempt"] == 3


async def test_a_restart_in_the_middle_of_a_delay_keeps_the_due_time(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    await handler(client, sid, "Flaky", FLAKY)
    cmd = await submit(client, sid, "Flaky", {"retries": 2, "backoff": {"type": "fixed", "base": 2}})
    cid = cmd["command_id"]

    async def retrying() -> list[dict[str, Any]]:
        return of(await events(client, sid), cid, "CommandRetrying")

    from tests.eventually import eventually

    await eventually(retrying, timeout=60)
    first = (await retrying())[0]["data"]
    view = await (await client.get("/api/commands")).json()
    assert [(c["attempt"], c["retry_at"]) for c in view["commands"]] == [(2, first["retry_at"])]
    await client.close()  # in the middle of the 2 s delay
    client = await make_client()
    done = await finished(client, sid, cid)
    assert done["status"] == "completed" and done["attempt"] == 3
    evts = await events(client, sid)
    started = of(evts, cid, "CommandStarted")
    assert parse_iso(started[1]["timestamp"]) >= parse_iso(first["retry_at"])
