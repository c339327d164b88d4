"""What an outside audit of the API contract (/openapi.json, the README) found a client would
hit: each test is one finding, on the real app with SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.api.bus_helpers import session_with_engine
from tests.conftest import assert_envelope, create_session

DUMMY = "DummyEngineCommand"


async def test_prefer_wait_is_a_preference_never_an_error(app_client):
    """RFC 7240: a server ignores a preference it cannot honour; it does not refuse the
    request. A wait past the longest one is held that long, and Preference-Applied says so;
    one that is not a number is ignored. (``?wait=`` is a parameter: still checked.)"""
    sid, _ = await session_with_engine(app_client)
    body = {"command_type": DUMMY, "parameters": {"prompt": "x"}}
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body, headers={"Prefer": "wait=600"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Preference-Applied"] == "wait=300"
    assert (await resp.json())["status"] == "completed"

    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body, headers={"Prefer": "wait=1.2.3"})
    assert resp.status in (200, 202), await resp.text()
    assert "Preference-Applied" not in resp.headers

    resp = await app_client.post(f"/api/sessions/{sid}/commands?wait=600", json=body)
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "wait"


async def test_retrying_nothing_in_a_session_that_is_not_there_is_404(app_client):
    resp = await app_client.post("/api/sessions/no-such-session/commands/retry", json={})
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    # In a real session, nothing asked for is still an empty answer, paged as the others are.
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={})
    assert resp.status == 200
    assert await resp.json() == {"commands": [], "total": 0, "limit": 1000, "offset": 0}


def _documented_headers(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, dict[str, Any]]:
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    refs = response.get("headers", {})
    return {name: doc["components"]["headers"][ref["$ref"].rsplit("/", 1)[1]] for name, ref in refs.items()}


def _assert_headers_as_documented(doc: dict[str, Any], method: str, path: str, resp: Any) -> dict[str, Any]:
    documented = _documented_headers(doc, method, path, resp.status)
    for name, header in documented.items():
        if header["required"]:
            assert name in resp.headers, (method, path, resp.status, name)
        if name in resp.headers and header["schema"]["type"] == "integer":
            assert resp.headers[name].isdigit(), (name, resp.headers[name])
    return documented


async def test_openapi_describes_the_response_headers(make_client):
    """A generated client reads the headers the document names: the request id and version of
    every answer, the rate limit's, a 401's challenge, a 429's Retry-After, and what became of
    an Idempotency-Key or a Prefer: wait. Each is checked against a real answer."""
    client = await make_client(LLMGINE_RATE_LIMIT_AUTHENTICATED="3")
    doc = await (await client.get("/openapi.json")).json()
    assert doc["components"]["headers"]["X-Request-ID"]["required"] is True

    resp = await client.post("/api/sessions", json={})
    documented = _assert_headers_as_documented(doc, "POST", "/api/sessions", resp)
    assert {"X-Request-ID", "X-Llmgine-Version", "RateLimit", "RateLimit-Policy"} <= set(documented)
    assert {"RateLimit", "RateLimit-Policy"} <= set(resp.headers)
    sid = (await resp.json())["session_id"]

    path = "/api/sessions/{session_id}/events"
    resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "X"}, headers={"Idempotency-Key": "a"})
    assert "Idempotent-Replayed" in _assert_headers_as_documented(doc, "POST", path, resp)
    resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "X"}, headers={"Idempotency-Key": "a"})
    assert resp.status == 429  # a fourth request over a limit of 3 a minute
    documented = _assert_headers_as_documented(doc, "POST", path, resp)
    assert "Retry-After" in documented and int(resp.headers["Retry-After"]) > 0

    resp = await client.get("/api/sessions", headers={"Authorization": "Bearer not-a-key"})
    assert resp.status == 401
    assert "WWW-Authenticate" in _assert_headers_as_documented(doc, "GET", "/api/sessions", resp)

    post = doc["paths"]["/api/sessions/{session_id}/commands"]["post"]["responses"]
    assert "Preference-Applied" in post["200"]["headers"]


async def test_the_batch_limit_is_in_the_schema(app_client):
    """A batch takes at most 10,000 commands; /openapi.json said only "at least 1", so a
    client validating against it sent 10,001 and met a 422 the document did not announce."""
    from llmgine_daemon.bus.commands.service import MAX_BATCH

    doc = await (await app_client.get("/openapi.json")).json()
    assert doc["components"]["schemas"]["BatchCreate"]["properties"]["commands"]["maxItems"] == MAX_BATCH
    sid, _ = await session_with_engine(app_client)
    body = {"commands": [{"command_type": DUMMY}] * (MAX_BATCH + 1)}
    resp = await app_client.post(f"/api/sessions/{sid}/commands/batch", json=body)
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "commands"


async def test_a_command_handler_is_only_for_a_type_a_command_can_have(app_client):
    """A handler for `a/b` or `1st` was registered (201), and no command could ever reach it:
    POST .../commands and bus.execute take only the command-type grammar. Now registering one
    is the same 422 as submitting such a command; event handlers still take any type user code
    may publish."""
    sid = (await create_session(app_client))["session_id"]
    code = "def h(command):\n    return 1\n"
    for bad in ("a/b", "1st", "café"):
        for path in (f"/api/sessions/{sid}/handlers/commands", "/api/handlers/commands"):
            resp = await app_client.post(path, json={"command_type": bad, "handler_function": code})
            error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
            assert error["details"]["field"] == "command_type", error
            assert "letters, digits" in error["details"]["issue"], error
        submitted = await app_client.post(f"/api/sessions/{sid}/commands", json={"command_type": bad})
        assert (await submitted.json())["error"]["details"]["issue"] == error["details"]["issue"]
    doc = await (await app_client.get("/openapi.json")).json()
    handler = doc["components"]["schemas"]["CommandHandlerCreate"]["properties"]["command_type"]
    command = doc["components"]["schemas"]["CommandCreate"]["properties"]["command_type"]
    assert (handler["pattern"], handler["maxLength"]) == (command["pattern"], command["maxLength"])
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events", json={"event_type": "a/b", "handler_function": "def h(event): pass"}
    )
    assert resp.status == 201, await resp.text()


async def test_a_tool_name_error_says_ascii(app_client):
    sid = (await create_session(app_client))["session_id"]
    body = {"name": "café", "function_code": "def café():\n    return 1\n"}
    resp = await app_client.post(f"/api/sessions/{sid}/tools", json=body)
    assert "ASCII" in assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["issue"]


async def test_a_new_webhooks_secret_is_kept_out_of_caches(app_client):
    """The answer to POST /api/webhooks holds the signing secret, shown once; it said nothing
    about caching, where an API key's or a session token's answer says no-store."""
    resp = await app_client.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["secret"].startswith("whsec_")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_a_bad_secret_name_is_reported_as_the_path_parameter(app_client):
    """`PUT /api/secrets/my-secret` said `field: name`, where /openapi.json (and the 422 for a
    name too long) call the path parameter `secret`."""
    for name in ("my-secret", "A" * 65):
        resp = await app_client.put(f"/api/secrets/{name}", json={"value": "x"})
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "secret", name


async def test_a_websocket_message_of_exactly_the_limit_is_taken(app_client):
    """The close reason says "at most 65536 bytes", and a message of exactly 65,536 bytes was
    closed with 1009: aiohttp refuses a message of its limit itself. Now the limit is the
    largest message taken, and one byte more is refused."""
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        frame = {"type": "ping", "pad": ""}
        frame["pad"] = "x" * (64 * 1024 - len(json.dumps(frame)))
        assert len(json.dumps(frame)) == 64 * 1024
        await ws.send_str(json.dumps(frame))
        answer = await ws.receive_json(timeout=10)  # read and answered (pad is not a field)
        assert answer["type"] == "error" and "pad" in answer["error"]["message"], answer
        frame["pad"] += "x"
        await ws.send_str(json.dumps(frame))
        msg = await ws.receive(timeout=10)
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
    assert msg.extra == f"message too big: at most {64 * 1024} bytes"
