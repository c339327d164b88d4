"""Restart: close the app, open a new one on the same data directory."""

from __future__ import annotations

from tests.api.bus_helpers import BLOCK_MS, DUMMY, events, finished, session_with_engine, submit


async def test_engines_are_restored(make_client):
    first = await make_client()
    sid, eid = await session_with_engine(first, delay_ms=0)
    await first.close()

    second = await make_client()
    engine = await (await second.get(f"/api/engines/{eid}")).json()
    assert engine["status"] == "initialized" and engine["session_id"] == sid
    resp = await second.post(f"/api/engines/{eid}/execute", json={"prompt": "again"})
    assert (await resp.json())["result"]["response"] == "Dummy response to: again"
    # Still registered, so still exclusive in its session.
    resp = await second.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid})
    assert resp.status == 409
    # A deleted engine stays deleted.
    await second.delete(f"/api/engines/{eid}")
    await second.close()
    third = await make_client()
    assert (await third.get(f"/api/engines/{eid}")).status == 404


async def test_executing_is_interrupted_and_queued_resumes(make_client):
    first = await make_client()
    sid, _ = await session_with_engine(first)
    running = await submit(first, sid, "running", delay_ms=BLOCK_MS)
    queued = [await submit(first, sid, f"q{i}", priority=p) for i, p in enumerate(("low", "high"))]
    assert running["status"] == "executing" and [q["status"] for q in queued] == ["queued", "queued"]
    await first.close()

    second = await make_client()
    record = await finished(second, sid, running["command_id"])
    assert record["status"] == "interrupted"
    assert record["error"]["code"] == "COMMAND_INTERRUPTED"
    for q in queued:
        assert (await finished(second, sid, q["command_id"]))["status"] == "completed"
    log = await events(second, sid, event_type="Command*")
    results = [(e["data"]["command_id"], e["data"]["status"]) for e in log if e["event_type"] == "CommandResult"]
    assert results[0] == (running["command_id"], "interrupted")
    # Priority still applies to the resumed queue.
    started = [e["data"]["command_id"] for e in log if e["event_type"] == "CommandStarted"]
    assert started[1:] == [queued[1]["command_id"], queued[0]["command_id"]]
    resp = await second.post(
        f"/api/sessions/{sid}/commands?wait=30", json={"command_type": DUMMY, "parameters": {"prompt": "new"}}
    )
    assert (await resp.json())["status"] == "completed"


async def test_a_queued_batch_resumes_in_its_mode(make_client):
    first = await make_client()
    sid, _ = await session_with_engine(first)
    blocker = await submit(first, sid, "block", delay_ms=BLOCK_MS)
    resp = await first.post(
        f"/api/sessions/{sid}/commands/batch",
        json={
            "mode": "sequential",
            "stop_on_error": True,
            "commands": [
                {"command_type": DUMMY, "parameters": {"prompt": p, "fail": p == "bad"}} for p in ("ok", "bad", "never")
            ],
        },
    )
    batch = await resp.json()
    assert blocker["status"] == "executing"
    await first.close()

    second = await make_client()
    statuses = [(await finished(second, sid, c["command_id"]))["status"] for c in batch["commands"]]
    assert statuses == ["completed", "failed", "cancelled"]
