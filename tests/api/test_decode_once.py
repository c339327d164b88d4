"""A request body is decoded once: whoever reads it first (the guard's session scope check, the
handler) gets the value the others get."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.util import json_response, read_json
from llmgine_daemon.app import create_app
from llmgine_daemon.protocol import EngineCreate, SessionCreate
from llmgine_daemon.settings import read_local_key

from tests.api.secutil import bearer, new_session
from tests.conftest import assert_envelope, serve

PROBE = "/api/test-decode-probe"


async def probe(request: web.Request) -> web.Response:
    first = await read_json(request, SessionCreate, empty_ok=True)
    again = await read_json(request, SessionCreate, empty_ok=True)
    # Another model is another reading of the bytes, not the cached value.
    other = await read_json(request, EngineCreate) if request.query.get("engine") else None
    return json_response(
        {"same": first is again, "name": first.name, "other": other.session_id if other is not None else None}
    )


async def start(aiohttp_client, make_settings):
    settings = make_settings()
    app = create_app(settings)
    app.router.add_post(PROBE, probe)
    client = await serve(aiohttp_client, app, settings)
    return client, read_local_key(settings.paths) or ""


async def test_second_read_returns_the_first_value(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    resp = await client.post(PROBE, json={"name": "x"}, headers=bearer(local))
    assert await resp.json() == {"same": True, "name": "x", "other": None}
    resp = await client.post(f"{PROBE}?engine=1", json={"name": "x"}, headers=bearer(local))
    # Decoded as EngineCreate it is not one (an unknown field): the model decides, not the cache.
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "name"


async def test_errors_are_not_cached_away(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    resp = await client.post(PROBE, data=b"{nope", headers={**bearer(local), "Content-Type": "application/json"})
    assert_envelope(await resp.json(), "INVALID_JSON")


async def test_session_token_engine_creation_in_and_out_of_scope(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    a, b = await new_session(client, local), await new_session(client, local)
    token = {"X-Session-Token": a["session_token"]}
    body = {"engine_type": "DummyEngine", "session_id": a["session_id"]}
    resp = await client.post("/api/engines", json=body, headers=token)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["session_id"] == a["session_id"]
    # Another session's id, or a body with none: outside the token's scope.
    resp = await client.post("/api/engines", json={**body, "session_id": b["session_id"]}, headers=token)
    assert_envelope(await resp.json(), "FORBIDDEN")
    resp = await client.post("/api/engines", data=b"{nope", headers={**token, "Content-Type": "application/json"})
    assert_envelope(await resp.json(), "FORBIDDEN")
    # Its own session with a body the handler refuses: the handler says why.
    resp = await client.post("/api/engines", json={**body, "engine_type": 7}, headers=token)
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
