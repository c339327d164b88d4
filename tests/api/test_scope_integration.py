"""Security checks on the engine and tool routes: a session token reaches its own session's
engines only, and the per-session capacity limits hold."""

from __future__ import annotations

from tests.api.secutil import bearer, new_session, start
from tests.conftest import assert_envelope


async def test_session_token_reaches_its_engines_only(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    a, b = await new_session(client, local), await new_session(client, local)
    ta, tb = {"X-Session-Token": a["session_token"]}, {"X-Session-Token": b["session_token"]}
    body = {"engine_type": "DummyEngine", "session_id": a["session_id"]}
    resp = await client.post("/api/engines", json=body, headers=ta)
    assert resp.status == 201, await resp.text()
    engine_id = (await resp.json())["engine_id"]
    assert (await client.get(f"/api/engines/{engine_id}", headers=ta)).status == 200
    assert (await client.get(f"/api/engines?session_id={a['session_id']}", headers=ta)).status == 200
    # Another session's token: not its engine, not its collection, cannot create in session a.
    assert (await client.get(f"/api/engines/{engine_id}", headers=tb)).status == 403
    assert (await client.delete(f"/api/engines/{engine_id}", headers=tb)).status == 403
    assert (await client.post("/api/engines", json=body, headers=tb)).status == 403
    assert (await client.get("/api/engines", headers=ta)).status == 403  # unfiltered: all sessions


async def test_max_engines_per_session(aiohttp_client, make_settings):
    # max 1: the bus allows one engine per command type in a session anyway.
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_ENGINES_PER_SESSION="1")
    s = await new_session(client, local)
    body = {"engine_type": "DummyEngine", "session_id": s["session_id"]}
    assert (await client.post("/api/engines", json=body, headers=bearer(local))).status == 201
    resp = await client.post("/api/engines", json=body, headers=bearer(local))
    assert assert_envelope(await resp.json(), "LIMIT_REACHED")["details"]["limit"] == "max_engines_per_session"
    # Another session has its own allowance.
    other = await new_session(client, local)
    resp = await client.post("/api/engines", json={**body, "session_id": other["session_id"]}, headers=bearer(local))
    assert resp.status == 201


async def test_max_tools_per_session(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_TOOLS_PER_SESSION="2")
    s = await new_session(client, local)
    path = f"/api/sessions/{s['session_id']}/tools"

    def tool(name: str) -> dict:
        return {"name": name, "description": "d", "parameters": {}, "function_code": f"def {name}():\n    return 1\n"}

    statuses = [(await client.post(path, json=tool(n), headers=bearer(local))).status for n in ("t1", "t2", "t3")]
    assert statuses[:2] in ([201, 201], [200, 200]) and statuses[2] == 409
