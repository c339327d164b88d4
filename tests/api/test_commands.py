"""Spec section 2 and the bus semantics: queueing, priorities, concurrency, timeouts, cancel,
failure shape, handler resolution, idempotency."""

from __future__ import annotations

from typing import Any

from llmgine_daemon.api.keys import BUS
from llmgine_daemon.bus.errors import BusError

from tests.api.bus_helpers import (
    BLOCK_MS,
    DUMMY,
    cancel,
    create_engine,
    events,
    finished,
    get_command,
    session_with_engine,
    status_of,
    submit,
)
from tests.conftest import assert_envelope, create_session

RECORD_FIELDS = {
    "command_id",
    "usage",  # null unless an engine made model calls (bus/usage.py)
    "status",
    "result",
    "error",
    "created_at",
    "session_id",
    "command_type",
    "parameters",
    "metadata",
    "priority",
    "timeout",
    "started_at",
    "finished_at",
    "duration_ms",
    "batch_id",
    "trace_id",
    "attempt",
}


async def test_submit_is_202_then_the_full_record(app_client):
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands",
        json={
            "command_type": DUMMY,
            "parameters": {"prompt": "Hello, world!", "delay_ms": 50},
            "metadata": {"priority": "high", "timeout": 30},
        },
    )
    assert resp.status == 202
    body = await resp.json()
    assert set(body) == RECORD_FIELDS
    assert body["status"] in ("queued", "executing")
    assert body["result"] is None and body["error"] is None and body["created_at"].endswith("Z")

    record = await finished(app_client, sid, body["command_id"])
    assert record["status"] == "completed"
    assert record["result"]["response"] == "Dummy response to: Hello, world!"
    assert record["error"] is None
    assert record["parameters"] == {"prompt": "Hello, world!", "delay_ms": 50}
    assert record["metadata"] == {"priority": "high", "timeout": 30}
    assert record["priority"] == "high" and record["timeout"] == 30
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    assert record["duration_ms"] >= 0


async def test_a_command_that_finishes_at_once_is_stored_finished_in_one_write(app_client):
    """An eager handler (DummyEngine) that never suspends runs before its submission commits:
    the answer is 200 with the finished record even without ?wait, the command is written once,
    and its events are CommandStarted, the handler's, CommandResult, in that order."""
    sid, _ = await session_with_engine(app_client)
    store = app_client.server.app[BUS].store
    before = store.writes
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands", json={"command_type": DUMMY, "parameters": {"prompt": "now"}}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "completed" and body["result"]["response"] == "Dummy response to: now"
    assert body["started_at"] is not None and body["finished_at"] is not None
    assert store.writes - before == 1
    stored = await get_command(app_client, sid, body["command_id"])
    assert {k: stored[k] for k in ("status", "result", "started_at", "finished_at", "duration_ms")} == {
        k: body[k] for k in ("status", "result", "started_at", "finished_at", "duration_ms")
    }
    mine = [e for e in await events(app_client, sid) if e["data"].get("command_id") == body["command_id"]]
    assert [e["event_type"] for e in mine] == [
        "CommandStarted",
        "DummyEngineStatusUpdate",
        "DummyEngineStatusUpdate",
        "CommandResult",
    ]
    assert [e["data"].get("status") for e in mine[1:]] == ["processing", "completed", "completed"]
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)


async def test_an_eager_command_refused_by_its_session_leaves_nothing(app_client):
    """The handler ran before the submission's write found the session ended: the client gets
    the error, and no command, event or result of that run is stored."""
    sid, _ = await session_with_engine(app_client)
    bus = app_client.server.app[BUS]
    seen = await events(app_client, sid)
    # End the session in the store only, so the daemon still has its engine registered and
    # the submission is refused inside its write (the race a concurrent DELETE would make).
    await bus.store.write(lambda c: c.execute("UPDATE sessions SET status = 'closed' WHERE session_id = ?", (sid,)))
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands", json={"command_type": DUMMY, "parameters": {"prompt": "late"}}
    )
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "SESSION_CLOSED"
    rows = await bus.store.fetchall("SELECT COUNT(*) FROM commands WHERE session_id = ?", (sid,))
    assert rows[0][0] == 0
    assert len(await events(app_client, sid)) == len(seen)
    assert not bus.commands.runner.jobs and sid not in bus.commands.runner.queues


async def test_an_eager_command_that_suspends_is_stored_before_its_events(app_client):
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands", json={"command_type": DUMMY, "parameters": {"prompt": "p", "delay_ms": 300}}
    )
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] == "executing"
    # While it sleeps, the command and its "processing" event are already committed.
    stored = await get_command(app_client, sid, body["command_id"])
    assert stored["status"] == "executing"
    cid = body["command_id"]
    types = [e["event_type"] for e in await events(app_client, sid) if e["data"].get("command_id") == cid]
    assert types[:1] == ["CommandStarted"]
    record = await finished(app_client, sid, body["command_id"])
    assert record["status"] == "completed"
    types = [e["event_type"] for e in await events(app_client, sid) if e["data"].get("command_id") == cid]
    assert types == ["CommandStarted", "DummyEngineStatusUpdate", "DummyEngineStatusUpdate", "CommandResult"]


async def test_wait_returns_the_finished_record_with_200(app_client):
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands?wait=30", json={"command_type": DUMMY, "parameters": {"prompt": "a b"}}
    )
    assert resp.status == 200
    assert (await resp.json())["status"] == "completed"

    resp = await app_client.post(
        f"/api/sessions/{sid}/commands",
        headers={"Prefer": "wait=30"},
        json={"command_type": DUMMY, "parameters": {"prompt": "x"}},
    )
    assert resp.status == 200
    assert resp.headers["Preference-Applied"] == "wait=30"
    assert (await resp.json())["result"]["usage"]["prompt_tokens"] == 1

    # Not finished in time: 202 with the current state.
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands?wait=0.01",
        json={"command_type": DUMMY, "parameters": {"prompt": "slow", "delay_ms": BLOCK_MS}},
    )
    assert resp.status == 202
    slow = await resp.json()
    assert slow["status"] == "executing"
    await cancel(app_client, sid, slow["command_id"])

    resp = await app_client.post(f"/api/sessions/{sid}/commands?wait=nope", json={"command_type": DUMMY})
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "wait"


async def test_events_bracket_every_execution(app_client):
    sid, _ = await session_with_engine(app_client)
    cid = (await submit(app_client, sid, "x", wait=30))["command_id"]
    mine = [e for e in await events(app_client, sid) if e["data"].get("command_id") == cid]
    assert [(e["event_type"], e["source"]) for e in mine] == [
        ("CommandStarted", "bus"),
        ("DummyEngineStatusUpdate", "engine"),
        ("DummyEngineStatusUpdate", "engine"),
        ("CommandResult", "bus"),
    ]
    assert [e["data"].get("status") for e in mine[1:3]] == ["processing", "completed"]
    assert mine[-1]["data"]["status"] == "completed"
    assert mine[-1]["data"]["result"]["response"] == "Dummy response to: x"
    seqs = [e["seq"] for e in mine]
    assert seqs == sorted(seqs)


async def test_no_handler_is_refused_and_nothing_is_stored(app_client):
    sid = (await create_session(app_client))["session_id"]
    before = await events(app_client, sid)
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json={"command_type": "Nobody"})
    assert resp.status == 404
    error = assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")
    assert error["details"]["command_type"] == "Nobody"
    listing = await (await app_client.get(f"/api/sessions/{sid}/commands")).json()
    assert listing["total"] == 0
    assert await events(app_client, sid) == before


async def test_unknown_and_closed_sessions(app_client):
    resp = await app_client.post("/api/sessions/nope/commands", json={"command_type": DUMMY})
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    assert resp.status == 404
    for path in ("/api/sessions/nope/commands", "/api/sessions/nope/commands/x"):
        resp = await app_client.get(path)
        assert resp.status == 404
        assert_envelope(await resp.json(), "SESSION_NOT_FOUND")

    sid, _ = await session_with_engine(app_client)
    resp = await app_client.get(f"/api/sessions/{sid}/commands/unknown-id")
    assert_envelope(await resp.json(), "COMMAND_NOT_FOUND")
    await app_client.delete(f"/api/sessions/{sid}")
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json={"command_type": DUMMY})
    assert resp.status == 409
    assert_envelope(await resp.json(), "SESSION_CLOSED")


async def test_validation(app_client):
    sid, _ = await session_with_engine(app_client)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"parameters": {}}, "command_type"),
        ({"command_type": DUMMY, "metadata": {"priority": "urgent"}}, "metadata.priority"),
        ({"command_type": DUMMY, "metadata": {"timeout": -1}}, "metadata.timeout"),
        ({"command_type": DUMMY, "metadata": {"timeout": "soon"}}, "metadata.timeout"),
        ({"command_type": DUMMY, "params": {}}, "params"),
        ({"command_type": "has space"}, "command_type"),
        ({"command_type": DUMMY, "parameters": []}, "parameters"),
    ]
    for body, field in cases:
        resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body)
        assert resp.status == 422, body
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field
    assert (await (await app_client.get(f"/api/sessions/{sid}/commands")).json())["total"] == 0


async def test_priority_order_within_a_session(app_client):
    sid, _ = await session_with_engine(app_client)
    blocker = await submit(app_client, sid, "block", delay_ms=BLOCK_MS)
    assert blocker["status"] == "executing"
    order = [("low", "l1"), ("normal", "n1"), ("high", "h1"), ("low", "l2"), ("high", "h2"), ("normal", "n2")]
    ids = {}
    for priority, name in order:
        record = await submit(app_client, sid, name, priority=priority)
        assert record["status"] == "queued"
        ids[record["command_id"]] = name
    await cancel(app_client, sid, blocker["command_id"])
    for cid in ids:
        assert (await finished(app_client, sid, cid))["status"] == "completed"
    started = [e["data"]["command_id"] for e in await events(app_client, sid, event_type="CommandStarted")]
    assert [ids[c] for c in started if c in ids] == ["h1", "h2", "n1", "n2", "l1", "l2"]


async def test_one_at_a_time_within_a_session(app_client):
    sid, _ = await session_with_engine(app_client)
    first = await submit(app_client, sid, "one", delay_ms=BLOCK_MS)
    second = await submit(app_client, sid, "two")
    assert first["status"] == "executing" and second["status"] == "queued"
    listing = await (await app_client.get(f"/api/sessions/{sid}/commands?status=executing")).json()
    assert [c["command_id"] for c in listing["commands"]] == [first["command_id"]]
    assert await status_of(app_client, sid, second["command_id"]) == "queued"
    await cancel(app_client, sid, first["command_id"])
    assert (await finished(app_client, sid, second["command_id"]))["status"] == "completed"
    log = [(e["event_type"], e["data"].get("command_id")) for e in await events(app_client, sid, event_type="Command*")]
    assert log == [
        ("CommandStarted", first["command_id"]),
        ("CommandResult", first["command_id"]),
        ("CommandStarted", second["command_id"]),
        ("CommandResult", second["command_id"]),
    ]


async def test_sessions_run_in_parallel(app_client):
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    ca = await submit(app_client, a, "a", delay_ms=BLOCK_MS)
    cb = await submit(app_client, b, "b", delay_ms=BLOCK_MS)
    # Both execute at the same time: neither waits for the other.
    assert await status_of(app_client, a, ca["command_id"]) == "executing"
    assert await status_of(app_client, b, cb["command_id"]) == "executing"
    # And a third session still gets its answer while both are busy.
    c, _ = await session_with_engine(app_client)
    assert (await submit(app_client, c, "c", wait=30))["status"] == "completed"
    for sid, cmd in ((a, ca), (b, cb)):
        assert (await cancel(app_client, sid, cmd["command_id"]))["status"] == "cancelled"


async def test_timeout(app_client):
    sid, _ = await session_with_engine(app_client)
    record = await submit(app_client, sid, "slow", timeout=0.05, delay_ms=BLOCK_MS, wait=30)
    assert record["status"] == "timed_out"
    assert record["error"]["code"] == "COMMAND_TIMEOUT"
    assert record["result"] is None and record["finished_at"]
    # The session moves on.
    assert (await submit(app_client, sid, "next", wait=30))["status"] == "completed"


async def test_failure_is_a_result_not_a_transport_error(app_client):
    sid, _ = await session_with_engine(app_client, fail=True)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands?wait=30", json={"command_type": DUMMY, "parameters": {"prompt": "x"}}
    )
    assert resp.status == 200
    record = await resp.json()
    assert record["status"] == "failed" and record["result"] is None
    error = record["error"]
    assert error["code"] == "COMMAND_EXECUTION_FAILED"
    assert "fail=true" in error["message"]
    assert error["details"]["exception_type"] == "DummyEngineError"
    assert "Traceback" in error["details"]["traceback"]
    result_event = (await events(app_client, sid, event_type="CommandResult"))[-1]
    assert result_event["data"]["status"] == "failed"
    assert result_event["data"]["error"]["code"] == "COMMAND_EXECUTION_FAILED"
    # Bad parameters fail the command too, as a VALIDATION_ERROR naming the field.
    record = await submit(app_client, sid, wait=30, prompt=None)
    assert record["status"] == "failed" and record["error"]["code"] == "VALIDATION_ERROR"
    assert record["error"]["details"]["field"] == "parameters.prompt"


async def test_cancel(app_client):
    sid, _ = await session_with_engine(app_client)
    running = await submit(app_client, sid, "r", delay_ms=BLOCK_MS)
    queued = await submit(app_client, sid, "q")
    done = await cancel(app_client, sid, queued["command_id"])
    assert done["status"] == "cancelled" and done["error"]["code"] == "COMMAND_CANCELLED"
    assert done["started_at"] is None
    done = await cancel(app_client, sid, running["command_id"])
    assert done["status"] == "cancelled" and done["started_at"] and done["finished_at"]
    assert (await get_command(app_client, sid, running["command_id"]))["status"] == "cancelled"

    error = assert_envelope(await cancel(app_client, sid, running["command_id"], expect=409), "CONFLICT")
    assert error["details"]["status"] == "cancelled"
    assert_envelope(await cancel(app_client, sid, "nope", expect=404), "COMMAND_NOT_FOUND")
    log = await events(app_client, sid, event_type="CommandResult")
    results = {e["data"]["command_id"]: e["data"]["status"] for e in log}
    assert results == {running["command_id"]: "cancelled", queued["command_id"]: "cancelled"}


async def test_ending_the_session_cancels_its_commands(app_client):
    sid, _ = await session_with_engine(app_client)
    running = await submit(app_client, sid, "r", delay_ms=BLOCK_MS)
    queued = await submit(app_client, sid, "q")
    resp = await app_client.delete(f"/api/sessions/{sid}")
    assert resp.status == 200
    for cmd in (running, queued):
        record = await finished(app_client, sid, cmd["command_id"])
        assert record["status"] == "cancelled", record
        assert record["error"]["message"] == "session ended"


async def test_list_filters_and_paging(app_client):
    sid, _ = await session_with_engine(app_client)
    done = [await submit(app_client, sid, f"p{i}", wait=30) for i in range(4)]
    failing = await submit(app_client, sid, "f", fail=True, wait=30)
    resp = await app_client.get(f"/api/sessions/{sid}/commands", params={"limit": 2, "offset": 1})
    page = await resp.json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    # Newest first.
    assert [c["command_id"] for c in page["commands"]] == [done[3]["command_id"], done[2]["command_id"]]
    page = await (await app_client.get(f"/api/sessions/{sid}/commands?status=failed")).json()
    assert [c["command_id"] for c in page["commands"]] == [failing["command_id"]]
    page = await (await app_client.get(f"/api/sessions/{sid}/commands?status=failed,completed")).json()
    assert page["total"] == 5
    # Repeated, as a FastAPI list parameter is given: every value counts (not only the last).
    page = await (await app_client.get(f"/api/sessions/{sid}/commands?status=failed&status=completed")).json()
    assert page["total"] == 5
    page = await (await app_client.get(f"/api/sessions/{sid}/commands?command_type=Other")).json()
    assert page["total"] == 0
    resp = await app_client.get(f"/api/sessions/{sid}/commands?status=bogus")
    assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_handler_resolution_session_over_global(app_client):
    bus = app_client.server.app[BUS]
    calls: list[str] = []

    async def global_echo(command: Any) -> Any:
        calls.append("global")
        return {"scope": "global", "params": command.parameters}

    async def session_echo(command: Any) -> Any:
        calls.append("session")
        return {"scope": "session"}

    reg = bus.handlers.register("Echo", global_echo)
    try:
        try:
            bus.handlers.register("Echo", session_echo)
        except BusError as exc:
            assert exc.code == "CONFLICT"
        else:
            raise AssertionError("a second global handler was accepted")
        s1 = (await create_session(app_client))["session_id"]
        s2 = (await create_session(app_client))["session_id"]
        bus.handlers.register("Echo", session_echo, session_id=s2)
        for sid, scope in ((s1, "global"), (s2, "session")):
            resp = await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Echo"})
            assert (await resp.json())["result"]["scope"] == scope
        assert calls == ["global", "session"]
    finally:
        bus.handlers.unregister(reg)


async def test_duplicate_handler_in_a_scope_is_409(app_client):
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid})
    assert resp.status == 409
    error = assert_envelope(await resp.json(), "CONFLICT")
    assert error["details"]["command_type"] == DUMMY
    # Another session is another scope.
    other = (await create_session(app_client))["session_id"]
    await create_engine(app_client, other)


async def test_idempotency_key(app_client):
    sid, _ = await session_with_engine(app_client)
    body = {"command_type": DUMMY, "parameters": {"prompt": "once"}}
    headers = {"Idempotency-Key": "k-1"}
    first = await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json=body, headers=headers)
    assert first.status == 200
    first_body = await first.json()
    again = await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json=body, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    again_body = await again.json()
    assert again_body["command_id"] == first_body["command_id"]
    assert again_body["status"] == "completed"
    listing = await (await app_client.get(f"/api/sessions/{sid}/commands")).json()
    assert listing["total"] == 1
    assert len(await events(app_client, sid, event_type="CommandStarted")) == 1

    # Key order does not matter; a different value does.
    same = {"parameters": {"prompt": "once"}, "command_type": DUMMY}
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=same, headers=headers)
    assert (await resp.json())["command_id"] == first_body["command_id"]
    other = {"command_type": DUMMY, "parameters": {"prompt": "twice"}}
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=other, headers=headers)
    assert resp.status == 422
    assert_envelope(await resp.json(), "IDEMPOTENCY_KEY_REUSED")
    # A new key executes again.
    resp = await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json=body, headers={"Idempotency-Key": "k-2"})
    assert (await resp.json())["command_id"] != first_body["command_id"]
    assert (await (await app_client.get(f"/api/sessions/{sid}/commands")).json())["total"] == 2


async def test_commands_are_traced_and_counted(app_client):
    sid, _ = await session_with_engine(app_client)
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands?wait=30",
        headers={"traceparent": f"00-{trace}-{parent}-01"},
        json={"command_type": DUMMY, "parameters": {"prompt": "t"}},
    )
    record = await resp.json()
    assert record["status"] == "completed" and record["trace_id"] == trace
    mine = [e for e in await events(app_client, sid) if e["data"].get("command_id") == record["command_id"]]
    assert {e["trace_id"] for e in mine} == {trace}

    body = await (await app_client.get(f"/api/observability/traces/{trace}")).json()

    def walk(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for span in spans for s in (span, *walk(span["children"]))]

    [run] = [s for s in walk(body["spans"]) if s["name"] == "command.run"]
    assert run["attributes"]["command_id"] == record["command_id"]
    assert run["attributes"]["command_type"] == DUMMY

    metrics = await (await app_client.get("/api/observability/metrics")).json()
    families = {m["name"]: m for m in metrics["metrics"]}
    [done] = [s for s in families["commands_total"]["series"] if s["labels"] == {"type": DUMMY, "status": "completed"}]
    assert done["value"] >= 1
    assert families["command_run_seconds"]["series"][0]["count"] >= 1
    assert families["command_queue_wait_seconds"]["series"][0]["count"] >= 1
