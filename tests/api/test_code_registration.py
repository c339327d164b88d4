"""Who may register code: API keys and the socket owner always; session tokens (handed to
browsers and other less trusted clients) only with sandbox.session_token_registration. Calling
an existing tool with a session token stays allowed."""

from __future__ import annotations

import msgspec
from llmgine_daemon import protocol
from llmgine_daemon.api.util import takes_code

from tests.api.secutil import bearer, new_session, start
from tests.conftest import assert_envelope

SETTING = "sandbox.session_token_registration"
TOOL = {
    "name": "add",
    "description": "add",
    "parameters": {},
    "function_code": "def add(a: int, b: int) -> int:\n    return a + b\n",
}
COMMAND_HANDLER = {"command_type": "Echo", "handler_function": "def echo(command):\n    return {'ok': True}\n"}
EVENT_HANDLER = {"event_type": "Ping", "handler_function": "def on_ping(event):\n    return None\n"}
# Every route that takes Python source, with a body it accepts.
CODE_ROUTES = {
    "/api/sessions/{session_id}/tools": TOOL,
    "/api/sessions/{session_id}/handlers/commands": COMMAND_HANDLER,
    "/api/sessions/{session_id}/handlers/events": EVENT_HANDLER,
    "/api/handlers/commands": COMMAND_HANDLER,
    "/api/handlers/events": EVENT_HANDLER,
}


def code_routes(client) -> set[str]:
    return {
        r.resource.canonical for r in client.app.router.routes() if r.resource is not None and takes_code(r.handler)
    }


def test_every_request_model_that_carries_code_is_known():
    """A new request body with a source field must come with a marked route (and this list)."""
    carriers = set()
    for name in dir(protocol):
        model = getattr(protocol, name)
        if isinstance(model, type) and issubclass(model, msgspec.Struct) and name.endswith("Create"):
            fields = set(model.__struct_fields__)
            if fields & {"function_code", "handler_function", "code", "source"}:
                carriers.add(name)
    assert carriers == {"ToolCreate", "CommandHandlerCreate", "EventHandlerCreate"}


async def test_code_routes_are_marked(aiohttp_client, make_settings):
    client, _ = await start(aiohttp_client, make_settings)
    assert code_routes(client) == set(CODE_ROUTES)


async def test_session_token_may_not_register_code_by_default(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    sid = s["session_id"]
    token = {"X-Session-Token": s["session_token"]}
    for canonical, body in CODE_ROUTES.items():
        path = canonical.format(session_id=sid)
        resp = await client.post(path, json=body, headers=token)
        assert resp.status == 403, (path, resp.status)
        error = assert_envelope(await resp.json(), "FORBIDDEN")
        if "{session_id}" in canonical:  # global routes are outside the token's session anyway
            assert SETTING in error["message"] and error["details"]["setting"] == SETTING
    # Nothing was registered.
    tools = await (await client.get(f"/api/sessions/{sid}/tools", headers=bearer(local))).json()
    handlers = await (await client.get(f"/api/sessions/{sid}/handlers", headers=bearer(local))).json()
    assert tools["total"] == 0 and handlers["total"] == 0

    # The API key registers; the session token may then call the tool.
    resp = await client.post(f"/api/sessions/{sid}/tools", json=TOOL, headers=bearer(local))
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/api/sessions/{sid}/tools/add/execute", json={"arguments": {"a": 2, "b": 3}}, headers=token
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"] == 5
    # Reading and deleting are not registering.
    assert (await client.get(f"/api/sessions/{sid}/tools/add", headers=token)).status == 200


async def test_session_token_registers_when_the_setting_allows(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_SANDBOX_SESSION_TOKEN_REGISTRATION="true")
    s = await new_session(client, local)
    sid = s["session_id"]
    token = {"X-Session-Token": s["session_token"]}
    for canonical, body in CODE_ROUTES.items():
        resp = await client.post(canonical.format(session_id=sid), json=body, headers=token)
        if "{session_id}" in canonical:
            assert resp.status == 201, (canonical, await resp.text())
        else:  # global handlers stay out of a session token's reach
            assert resp.status == 403
    resp = await client.post(
        f"/api/sessions/{sid}/tools/add/execute", json={"arguments": {"a": 1, "b": 1}}, headers=token
    )
    assert (await resp.json())["result"] == 2
    config = await (await client.get("/api/config", headers=bearer(local))).json()
    assert any(item["key"] == SETTING and item["value"] is True for item in config["settings"]), config


async def test_socket_owner_registers_code(unix_client):
    resp = await unix_client.post("/api/sessions", json={})
    sid = (await resp.json())["session_id"]
    resp = await unix_client.post(f"/api/sessions/{sid}/tools", json=TOOL)
    assert resp.status == 201, await resp.text()
