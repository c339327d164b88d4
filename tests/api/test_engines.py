"""Spec section 4: engines, with DummyEngine."""

from __future__ import annotations

from tests.api.bus_helpers import BLOCK_MS, DUMMY, cancel, create_engine, events, finished, session_with_engine, submit
from tests.conftest import assert_envelope, create_session

ENGINE_FIELDS = {
    "usage",  # null but in GET /api/engines/{id} (bus/usage.py)
    "engine_id",
    "engine_type",
    "model_name",
    "status",
    "session_id",
    "configuration",
    "created_at",
    "command_type",
}


async def test_types(app_client):
    resp = await app_client.get("/api/engines/types")
    assert resp.status == 200
    types = {t["engine_type"]: t for t in (await resp.json())["types"]}
    dummy = types["DummyEngine"]
    assert dummy["command_type"] == DUMMY
    fields = {f["name"]: f for f in dummy["configuration"]}
    assert fields["delay_ms"]["type"] == "integer" and fields["delay_ms"]["default"] == 0
    assert fields["fail"]["type"] == "boolean"


async def test_create_as_in_the_spec(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(
        "/api/engines",
        json={
            "engine_type": "DummyEngine",
            "model_name": "gpt-4",
            "session_id": sid,
            "configuration": {"temperature": 0.7, "max_tokens": 1000},
        },
    )
    assert resp.status == 201
    engine = await resp.json()
    assert set(engine) == ENGINE_FIELDS
    assert engine["status"] == "initialized" and engine["session_id"] == sid
    assert engine["configuration"] == {"temperature": 0.7, "max_tokens": 1000}
    got = await (await app_client.get(f"/api/engines/{engine['engine_id']}")).json()
    assert got == engine
    assert [e["event_type"] for e in await events(app_client, sid)] == ["SessionStarted", "EngineCreated"]
    session = await (await app_client.get(f"/api/sessions/{sid}")).json()
    assert session["counts"]["engines"] == 1


async def test_create_errors(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post("/api/engines", json={"engine_type": "GPT9", "session_id": sid})
    assert resp.status == 422
    error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert error["details"]["field"] == "engine_type" and "DummyEngine" in error["details"]["available"]
    resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": "nope"})
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    bad_configs = (
        ({"delay_ms": "slow"}, "configuration.delay_ms"),
        ({"delay_ms": -1}, "configuration.delay_ms"),
        ({"fail": 1}, "configuration.fail"),
        ({"dleay_ms": 5}, "configuration.dleay_ms"),
        # Integers past a float's range are out of range too (float() of one raised: a 500).
        ({"max_tokens": 10**400}, "configuration.max_tokens"),
        ({"delay_ms": -(10**400)}, "configuration.delay_ms"),
    )
    for config, field in bad_configs:
        resp = await app_client.post(
            "/api/engines", json={"engine_type": "DummyEngine", "session_id": sid, "configuration": config}
        )
        assert resp.status == 422, config
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field
    resp = await app_client.post("/api/engines", json={"session_id": sid})
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "engine_type"
    # Nothing was created by the failures, and the slot is still free.
    assert (await (await app_client.get(f"/api/engines?session_id={sid}")).json())["total"] == 0
    await create_engine(app_client, sid)
    await app_client.delete(f"/api/sessions/{sid}")
    resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid})
    assert resp.status == 409
    assert_envelope(await resp.json(), "SESSION_CLOSED")


async def test_list_filters(app_client):
    s1, e1 = await session_with_engine(app_client)
    s2, e2 = await session_with_engine(app_client)
    all_ = await (await app_client.get("/api/engines")).json()
    assert all_["total"] == 2 and {e["engine_id"] for e in all_["engines"]} == {e1, e2}
    only = await (await app_client.get("/api/engines", params={"session_id": s1})).json()
    assert [e["engine_id"] for e in only["engines"]] == [e1]
    await app_client.delete(f"/api/sessions/{s2}")
    active = await (await app_client.get("/api/engines", params={"status": "active"})).json()
    assert [e["engine_id"] for e in active["engines"]] == [e1]
    stopped = await (await app_client.get("/api/engines", params={"status": "stopped"})).json()
    assert [e["engine_id"] for e in stopped["engines"]] == [e2]
    resp = await app_client.get("/api/engines", params={"status": "sleepy"})
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    # A stopped engine cannot execute.
    resp = await app_client.post(f"/api/engines/{e2}/execute", json={"prompt": "x"})
    assert resp.status == 409


async def test_execute(app_client):
    sid, eid = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/engines/{eid}/execute", json={"prompt": "Hello, world!", "parameters": {"temperature": 0.2}}
    )
    assert resp.status == 200
    record = await resp.json()
    assert record["status"] == "completed" and record["command_type"] == DUMMY
    assert record["session_id"] == sid
    assert record["result"]["response"] == "Dummy response to: Hello, world!"
    assert record["result"]["temperature"] == 0.2 and record["result"]["engine_id"] == eid
    # It is a recorded command of the session, with its events.
    got = await (await app_client.get(f"/api/sessions/{sid}/commands/{record['command_id']}")).json()
    assert got["status"] == "completed"
    updates = [e["data"]["status"] for e in await events(app_client, sid, event_type="DummyEngineStatusUpdate")]
    assert updates == ["processing", "completed"]

    # (DummyEngine finishes at once unless told to take its time.)
    resp = await app_client.post(
        f"/api/engines/{eid}/execute?wait=0", json={"prompt": "later", "parameters": {"delay_ms": 50}}
    )
    assert resp.status == 202
    later = await resp.json()
    assert later["command_id"] and later["status"] in ("queued", "executing")
    done = await (await app_client.get(f"/api/sessions/{sid}/commands/{later['command_id']}?wait=30")).json()
    assert done["status"] == "completed"

    resp = await app_client.post(f"/api/engines/{eid}/execute", json={})
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "prompt"
    resp = await app_client.post("/api/engines/nope/execute", json={"prompt": "x"})
    assert resp.status == 404
    assert_envelope(await resp.json(), "ENGINE_NOT_FOUND")


async def test_execute_with_idempotency_key_runs_once(app_client):
    """A retry of an execute with the same Idempotency-Key answers the command already stored
    (`llmgine engine exec` resends its request this way when Ctrl-C comes before the answer)."""
    sid, eid = await session_with_engine(app_client)
    body, key = {"prompt": "once", "parameters": {"delay_ms": 50}}, {"Idempotency-Key": "exec-1"}
    first = await app_client.post(f"/api/engines/{eid}/execute?wait=0", json=body, headers=key)
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    again = await app_client.post(f"/api/engines/{eid}/execute?wait=30", json=body, headers=key)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["command_id"] == (await first.json())["command_id"]
    assert (await (await app_client.get(f"/api/sessions/{sid}/commands")).json())["total"] == 1
    # The key is bound to the body: another prompt with it is refused, not run.
    resp = await app_client.post(f"/api/engines/{eid}/execute", json={"prompt": "other"}, headers=key)
    assert resp.status == 422
    assert_envelope(await resp.json(), "IDEMPOTENCY_KEY_REUSED")


async def test_delete_unregisters_the_handler(app_client):
    sid, eid = await session_with_engine(app_client)
    resp = await app_client.delete(f"/api/engines/{eid}")
    assert resp.status == 200
    assert (await resp.json())["status"] == "stopped"
    for method, path in (("GET", f"/api/engines/{eid}"), ("DELETE", f"/api/engines/{eid}")):
        resp = await app_client.request(method, path)
        assert resp.status == 404
        assert_envelope(await resp.json(), "ENGINE_NOT_FOUND")
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json={"command_type": DUMMY})
    assert resp.status == 404
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")
    assert (await events(app_client, sid))[-1]["event_type"] == "EngineDeleted"
    # The slot is free again.
    await create_engine(app_client, sid)


async def test_queued_commands_of_a_deleted_engine_fail_with_handler_not_found(app_client):
    sid, eid = await session_with_engine(app_client)
    blocker = await submit(app_client, sid, "block", delay_ms=BLOCK_MS)
    queued = await submit(app_client, sid, "later")
    assert (await app_client.delete(f"/api/engines/{eid}")).status == 200
    await cancel(app_client, sid, blocker["command_id"])
    record = await finished(app_client, sid, queued["command_id"])
    assert record["status"] == "failed"
    assert record["error"]["code"] == "HANDLER_NOT_FOUND"


async def test_a_command_without_its_prompt_is_a_validation_error(app_client):
    """The spec's own VALIDATION_ERROR example ({"field": "prompt", "issue": "Field is
    required"}): a DummyEngineCommand without a prompt fails as the LLM engines' do, naming the
    field, not as COMMAND_EXECUTION_FAILED with a traceback of the daemon's own files."""
    sid, _ = await session_with_engine(app_client)
    for parameters, issue in (({}, "Field is required"), ({"prompt": 3}, "must be a string")):
        resp = await app_client.post(
            f"/api/sessions/{sid}/commands",
            params={"wait": "30"},
            json={"command_type": DUMMY, "parameters": parameters},
        )
        record = await resp.json()
        assert record["status"] == "failed", record
        assert record["error"] == {
            "code": "VALIDATION_ERROR",
            "message": "Invalid request parameters",
            "details": {"field": "parameters.prompt", "issue": issue},
        }


async def test_a_dummy_parameter_of_the_wrong_type_is_a_validation_error(app_client):
    """`llmgine command run DummyEngineCommand -p fail=true` sends the string "true": the
    DummyEngine took an override of the wrong type as no override and completed the command
    (docs/bus.md's own example expected it to fail), where the LLM engines refuse one. Now it
    is VALIDATION_ERROR naming the parameter, before anything runs (no status update)."""
    sid, _ = await session_with_engine(app_client)
    for name, value, issue in (
        ("fail", "true", "must be of type boolean"),
        ("delay_ms", "500", "must be of type integer"),
        ("delay_ms", -1, "must be at least 0"),
        ("max_tokens", 0, "must be at least 1"),
        ("temperature", "0.2", "must be of type number"),
    ):
        resp = await app_client.post(
            f"/api/sessions/{sid}/commands",
            params={"wait": "30"},
            json={"command_type": DUMMY, "parameters": {"prompt": "hi", name: value}},
        )
        record = await resp.json()
        assert record["status"] == "failed", record
        assert record["error"] == {
            "code": "VALIDATION_ERROR",
            "message": "Invalid request parameters",
            "details": {"field": f"parameters.{name}", "issue": issue},
        }
        assert [e["event_type"] for e in await events(app_client, sid, event_type="DummyEngineStatusUpdate")] == []
    ok = await app_client.post(
        f"/api/sessions/{sid}/commands",
        params={"wait": "30"},
        json={"command_type": DUMMY, "parameters": {"prompt": "hi", "fail": None, "delay_ms": 1.0, "other": "x"}},
    )
    assert (await ok.json())["status"] == "completed"


async def test_a_page_of_large_commands_is_sent_whole_part_by_part(app_client, monkeypatch):
    """The commands list built its page whole in memory: a session token's thousand commands
    with a 1 MB prompt each (the DummyEngine's result echoes it) made the daemon hold gigabytes
    for each GET of them. Past PAGE_BYTES the page is read and sent part by part, whole."""
    monkeypatch.setattr("llmgine_daemon.bus.pages.PAGE_BYTES", 16_000)
    sid, engine_id = await session_with_engine(app_client)
    for i in range(12):
        resp = await app_client.post(
            f"/api/engines/{engine_id}/execute", json={"prompt": "x" * 3000, "metadata": {"i": i}}
        )
        assert resp.status == 200, await resp.text()
    resp = await app_client.get(f"/api/sessions/{sid}/commands?limit=9&offset=1")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    page = await resp.json()
    assert [c["metadata"]["i"] for c in page["commands"]] == list(range(10, 1, -1))  # the newest first
    assert {k: page[k] for k in ("total", "limit", "offset")} == {"total": 12, "limit": 9, "offset": 1}
    assert page["commands"][0]["result"]["response"] == "Dummy response to: " + "x" * 3000
    rest = await (await app_client.get(f"/api/sessions/{sid}/commands?limit=9&offset=10")).json()
    assert [c["metadata"]["i"] for c in rest["commands"]] == [1, 0]
