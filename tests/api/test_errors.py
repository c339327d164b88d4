"""The one error envelope, for every way a request can go wrong."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import read_local_key

from tests.conftest import assert_envelope


async def test_unknown_route_is_404_envelope(app_client):
    resp = await app_client.get("/api/nope")
    assert resp.status == 404
    assert_envelope(await resp.json(), "NOT_FOUND")
    assert resp.headers["X-Request-ID"]


async def test_a_trailing_slash_redirects_as_fastapi_does(app_client):
    """Starlette's redirect_slashes: a path served without its trailing slash is 307 to it (the
    query kept; 307 sends the method and body again), any other stays a 404 envelope."""
    resp = await app_client.get("/api/sessions/?limit=1", allow_redirects=False)
    assert resp.status == 307 and resp.headers["Location"] == "/api/sessions?limit=1"
    assert resp.headers["X-Request-ID"]
    resp = await app_client.post("/api/sessions/", json={"name": "slash"})  # followed
    assert resp.status == 201 and (await resp.json())["name"] == "slash"
    sid = (await resp.json())["session_id"]
    resp = await app_client.get(f"/api/sessions/{sid}/events/", allow_redirects=False)
    assert resp.status == 307 and resp.headers["Location"] == f"/api/sessions/{sid}/events"
    for path in ("/api/nope/", "/api/sessions/x/nope/", "/"):
        resp = await app_client.get(path, allow_redirects=False)
        assert resp.status == 404, path
        assert_envelope(await resp.json(), "NOT_FOUND")
    resp = await app_client.get("/api/sessions/nope/", allow_redirects=True)  # the route's own 404
    assert resp.status == 404 and assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    # An absolute-form target names a host: the Location never does. (One the Host allowlist
    # refuses is 403 first: tests/api/test_guard.py.)
    reader, writer = await asyncio.open_connection(app_client.host, app_client.port)
    writer.write(
        b"GET http://localhost:1/api/sessions/?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in app_client.session.headers.items())
        + b"Connection: close\r\n\r\n"
    )
    head = (await reader.read()).split(b"\r\n\r\n")[0].decode()
    writer.close()
    assert head.startswith("HTTP/1.1 307") and "\r\nLocation: /api/sessions?limit=1\r\n" in head, head


async def test_wrong_method_is_405_with_allow(app_client):
    resp = await app_client.put("/api/sessions")
    assert resp.status == 405
    error = assert_envelope(await resp.json(), "METHOD_NOT_ALLOWED")
    assert "GET" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]
    assert "POST" in error["details"]["allowed_methods"]


async def test_unknown_body_field_is_refused_unknown_query_parameter_ignored(app_client):
    # README, Errors: a misspelt optional field must not vanish.
    resp = await app_client.post("/api/sessions", json={"name": "x", "metdata": {"a": 1}})
    assert resp.status == 422
    error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert error["details"] == {"field": "metdata", "issue": "Unknown field"}
    resp = await app_client.get("/api/sessions?limit=1&no_such_parameter=1")
    assert resp.status == 200 and (await resp.json())["limit"] == 1


async def test_malformed_json_is_400(app_client):
    resp = await app_client.post("/api/sessions", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "INVALID_JSON")


async def test_non_object_body_is_validation_error(app_client):
    for body in (b"[1, 2]", b'"text"', b"42", b"null"):
        resp = await app_client.post("/api/sessions", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 422, body
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "body"


async def test_wrong_content_type_is_415(app_client):
    resp = await app_client.post(
        "/api/sessions", data=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 415
    assert_envelope(await resp.json(), "UNSUPPORTED_MEDIA_TYPE")


async def test_oversized_body_is_413(make_client):
    client = await make_client(LLMGINE_MAX_BODY_SIZE="2048")
    resp = await client.post(
        "/api/sessions",
        data=b'{"name": "' + b"x" * 4096 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert_envelope(await resp.json(), "PAYLOAD_TOO_LARGE")


async def test_absurdly_nested_json_is_rejected(app_client):
    depth = 100_000
    body = b'{"metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    resp = await app_client.post("/api/sessions", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 422  # the one nesting rule (tests/api/test_json_depth.py)
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["max_depth"] == 64


async def test_request_id_echoed_or_generated(app_client):
    resp = await app_client.get("/api/health", headers={"X-Request-ID": "my-req-42"})
    assert resp.headers["X-Request-ID"] == "my-req-42"
    resp = await app_client.get("/api/nope", headers={"X-Request-ID": "abc-1"})
    assert (await resp.json())["request_id"] == "abc-1"
    # A header that is not a sane id is replaced, not reflected.
    resp = await app_client.get("/api/health", headers={"X-Request-ID": "<script>"})
    assert resp.headers["X-Request-ID"] != "<script>"
    assert len(resp.headers["X-Request-ID"]) == 36


async def test_streams_carry_the_request_id_and_version_too(app_client):
    # An event stream and a WebSocket handshake are sent by their handlers, not the edge:
    # they carry the two headers every answer carries all the same.
    sid = (await (await app_client.post("/api/sessions", json={})).json())["session_id"]
    resp = await app_client.get(
        f"/api/sessions/{sid}/events/stream",
        headers={"Accept": "text/event-stream", "X-Request-ID": "sse-1"},
    )
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] == "sse-1" and resp.headers["X-Llmgine-Version"]
    resp.close()
    ws = await app_client.ws_connect(f"/api/sessions/{sid}/events/stream", headers={"X-Request-ID": "ws-1"})
    assert ws._response.headers["X-Request-ID"] == "ws-1" and ws._response.headers["X-Llmgine-Version"]
    await ws.close()


async def test_unexpected_exception_is_500_without_traceback(aiohttp_client, make_settings, caplog):
    settings = make_settings()
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/api/boom", boom)
    client = await aiohttp_client(app)
    client.session.headers["Authorization"] = f"Bearer {read_local_key(settings.paths)}"
    with caplog.at_level(logging.ERROR, logger="llmgine.api"):
        resp = await client.get("/api/boom")
    assert resp.status == 500
    payload = await resp.json()
    assert_envelope(payload, "INTERNAL_ERROR")
    assert "secret internals" not in await resp.text()
    assert "Traceback" not in await resp.text()
    assert payload["request_id"] in payload["error"]["message"]
    assert any("RuntimeError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_bearer_required_on_tcp_when_secret_set(make_client):
    client = await make_client(authenticated=False, API_KEY_SECRET="s3cret-key")
    assert (await client.get("/api/health")).status == 200  # the probe stays open
    resp = await client.get("/api/sessions")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_envelope(await resp.json(), "UNAUTHORIZED")
    resp = await client.get("/api/sessions", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await client.get("/api/sessions", headers={"Authorization": "Bearer s3cret-key"})
    assert resp.status == 200


async def test_unix_socket_needs_no_credential(make_settings, home, unix_client):
    resp = await unix_client.get("/api/sessions")
    assert resp.status == 200


def test_every_pattern_of_a_request_has_words_for_its_422():
    # `llmgine webhook add URL -e 'Bad Type'` said "events[0]: Expected `str` matching regex
    # '^([A-Za-z_][A-Za-z0-9_.:\\-]{0,127}|...)$'": a pattern no rule in PATTERN_RULES named was
    # shown as msgspec's regex. Every pattern a request model uses now has its words.
    import msgspec
    from llmgine_daemon.protocol.endpoints import ENDPOINTS
    from llmgine_daemon.protocol.grammar import PATTERN_RULES

    models = [e.request for e in ENDPOINTS if isinstance(e.request, type)]
    _, components = msgspec.json.schema_components(models)
    patterns: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(components)
    assert patterns and not patterns - PATTERN_RULES.keys(), sorted(patterns - PATTERN_RULES.keys())


async def test_a_bad_webhook_is_said_in_words(app_client):
    for body, field, words in (
        ({"url": "ftp://example.invalid/x"}, "url", "http:// or https://"),
        ({"url": "hook"}, "url", "http:// or https://"),  # was "Expected `str` of length >= 8"
        ({"url": "http://"}, "url", "must name a host"),
        ({"url": "http://127.0.0.1:9/x", "events": ["Bad Type"]}, "events[0]", "prefix ending in *"),
    ):
        resp = await app_client.post("/api/webhooks", json=body)
        assert resp.status == 422
        details = assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]
        assert details["field"] == field and words in details["issue"] and "regex" not in details["issue"], details


async def test_an_empty_body_is_none_and_whitespace_is_not_json(app_client):
    """Where a body may be left out (POST /api/sessions), an empty one is none; a body of
    whitespace alone was taken for none too, though no JSON parser reads it (schemathesis:
    a schema-violating request accepted)."""
    json_type = {"Content-Type": "application/json"}
    resp = await app_client.post("/api/sessions", data=b"", headers=json_type)
    assert resp.status == 201
    sid = (await resp.json())["session_id"]
    for body in (b"\n", b"  \t"):
        for path in ("/api/sessions", f"/api/sessions/{sid}/events"):  # a body optional, required
            resp = await app_client.post(path, data=body, headers=json_type)
            assert resp.status == 400, (path, body)
            assert_envelope(await resp.json(), "INVALID_JSON")
