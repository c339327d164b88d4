"""Limits: body, header and WebSocket message sizes, slow-drip clients, capacities, and
identifiers. Slow clients are checked by what happens (others are served, the slow one is
dropped), never by how long it took."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from types import FrameType

import aiohttp
import pytest
from llmgine_daemon.api import limits

from tests.api.secutil import WS_PATH, bearer, new_session, start
from tests.conftest import assert_envelope, create_session


async def raw(client, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_body_too_large_is_413(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_BODY_SIZE="1024")
    resp = await client.post(
        "/api/sessions",
        data=b'{"name": "' + b"x" * 2000 + b'"}',
        headers={"Content-Type": "application/json", **bearer(local)},
    )
    assert resp.status == 413
    assert_envelope(await resp.json(), "PAYLOAD_TOO_LARGE")
    # Unauthenticated bodies are refused before they are read.
    resp = await client.post("/api/sessions", data=b"x" * 2000)
    assert resp.status == 401


async def test_header_too_large_is_refused(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_HEADER_SIZE="1024")
    resp = await client.get("/api/status", headers={"X-Big": "x" * 2000, **bearer(local)})
    assert resp.status in (400, 431)
    resp = await client.get("/api/status?q=" + "x" * 2000, headers=bearer(local))
    assert resp.status in (400, 414)
    assert (await client.get("/api/status", headers=bearer(local))).status == 200


async def test_websocket_message_too_big_closes_1009(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_WS_MESSAGE_SIZE="1024")
    s = await new_session(client, local)
    ws = await client.ws_connect(WS_PATH.format(session_id=s["session_id"]), headers=bearer(local))
    await ws.send_str("x" * 1000)
    assert (await ws.receive(timeout=10)).data == "x" * 1000
    await ws.send_str("x" * 2000)
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
    await ws.close()


async def test_slow_drip_headers_do_not_block_others_and_are_dropped(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_READ_TIMEOUT="0.5")
    drips = [await raw(client, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ") for _ in range(20)]
    # Everyone else is served while the dripping connections hang there.
    results = await asyncio.gather(*(client.get("/api/status", headers=bearer(local)) for _ in range(20)))
    assert [r.status for r in results] == [200] * 20
    # The dripping connections are closed without a request ever being handled.
    for reader, writer in drips:
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()


async def test_slow_drip_body_gets_408(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_READ_TIMEOUT="0.5")
    head = (
        f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {local}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    ).encode()
    reader, writer = await raw(client, head)
    assert (await client.get("/api/status", headers=bearer(local))).status == 200
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408") and b"REQUEST_TIMEOUT" in answer
    writer.close()
    body = await (await client.get("/api/sessions", headers=bearer(local))).json()
    assert body["total"] == 0  # nothing was created from half a body


async def test_a_declared_length_over_the_limit_is_413_before_the_body(aiohttp_client, make_settings):
    # The client says its body is bigger than the limit and sends none of it: the answer is
    # 413 at once, not a 408 once the read timeout has passed waiting for a body that would
    # be refused anyway.
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_BODY_SIZE="1024", LLMGINE_READ_TIMEOUT="2")
    head = (
        f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {local}\r\n"
        "Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n"
    ).encode()
    reader, writer = await raw(client, head)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"connection: close" in answer.lower(), answer
    # The connection ends with the answer: the client cannot go on streaming the body it
    # declared (aiohttp would drain it for up to lingering_time on a kept-alive connection).
    await ended(reader)
    writer.close()


async def ended(reader: asyncio.StreamReader) -> None:
    """The server closed the connection once its answer was out (EOF within seconds)."""
    rest = await asyncio.wait_for(reader.read(), 5)
    assert reader.at_eof(), rest


async def test_an_unreadable_body_ends_the_connection(aiohttp_client, make_settings):
    """A body that cannot be decoded (gzip named, not sent) is refused before the rest of what
    its Content-Length declares arrived; the connection ends with the answer, so those bytes
    are never read as the next request (aiohttp's pure-Python parser did: a request smuggled
    inside another's body ran)."""
    client, local = await start(aiohttp_client, make_settings)
    smuggled = (
        f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {local}\r\n"
        'Content-Type: application/json\r\nContent-Length: 21\r\n\r\n{"name": "smuggled"}\n'
    ).encode()
    first = b"notgzip!!!" * 3
    head = (
        f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {local}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(first) + len(smuggled)}\r\n\r\n"
    ).encode()
    reader, writer = await raw(client, head + first)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower(), answer
    with contextlib.suppress(ConnectionError):
        writer.write(smuggled)  # the rest of the declared body
        await writer.drain()
    await ended(reader)
    writer.close()
    listed = await client.get("/api/sessions", headers={"Authorization": f"Bearer {local}"})
    assert "smuggled" not in [s.get("name") for s in (await listed.json())["sessions"]]


async def test_max_sessions(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_SESSIONS="3")
    sessions = [await new_session(client, local) for _ in range(3)]
    results = await asyncio.gather(*(client.post("/api/sessions", json={}, headers=bearer(local)) for _ in range(5)))
    assert {r.status for r in results} == {409}
    error = assert_envelope(await results[0].json(), "LIMIT_REACHED")
    assert error["details"] == {"limit": "max_sessions", "max": 3}
    # Ending one frees room.
    await client.delete(f"/api/sessions/{sessions[0]['session_id']}", headers=bearer(local))
    assert (await client.post("/api/sessions", json={}, headers=bearer(local))).status == 201


async def test_concurrent_creations_cannot_overshoot(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_SESSIONS="5")
    results = await asyncio.gather(*(client.post("/api/sessions", json={}, headers=bearer(local)) for _ in range(20)))
    created = sum(r.status == 201 for r in results)
    assert 1 <= created <= 5
    assert all(r.status in (201, 409) for r in results)
    total = (await (await client.get("/api/sessions?status=active", headers=bearer(local))).json())["total"]
    assert total == created


async def test_max_websockets(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_WEBSOCKETS="2")
    s = await new_session(client, local)
    path = WS_PATH.format(session_id=s["session_id"])
    first = await client.ws_connect(path, headers=bearer(local))
    second = await client.ws_connect(path, headers=bearer(local))
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(path, headers=bearer(local))
    assert err.value.status == 409
    await first.close()
    await second.send_str("x")
    await second.receive(timeout=10)  # the server has noticed the first one went
    third = await client.ws_connect(path, headers=bearer(local))
    await third.close()
    await second.close()


@pytest.mark.parametrize(
    "segment",
    [
        "..",
        "a..b",
        "%2e%2e",
        "x%00y",
        "%E2%80%A8",
        "sessi%D0%BEn",
        "-leading",
        "a" * 129,
        "semi;colon",
        "sp%20ace",
    ],
)
async def test_bad_identifiers_are_422(aiohttp_client, make_settings, segment):
    client, local = await start(aiohttp_client, make_settings)
    for path in (f"/api/sessions/{segment}", f"/api/auth/keys/{segment}", f"/api/sessions/{segment}/token"):
        resp = await client.request("GET" if "token" not in path else "POST", path, headers=bearer(local))
        assert resp.status in (404, 422), (path, resp.status)
        if resp.status == 422:
            assert_envelope(await resp.json(), "VALIDATION_ERROR")
    resp = await client.get(f"/api/sessions/{segment}", headers=bearer(local))
    assert resp.status in (404, 422)
    # A *_id query parameter the route takes (one it does not take is ignored: test_fastapi_parity).
    resp = await client.get("/api/engines", params={"session_id": "../x"}, headers=bearer(local))
    assert resp.status == 422


async def test_identifier_check_refuses_anything_but_identifiers(app_client):
    from yarl import URL

    sid = (await create_session(app_client))["session_id"]
    assert (await app_client.get(f"/api/sessions/{sid}")).status == 200
    for bad in ("%2A", "a%2A", "..%2Fx", "x%00", "a%2Fb"):
        resp = await app_client.get(URL(f"/api/sessions/{bad}", encoded=True))
        assert resp.status == 422, bad
        assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_handler_types_in_the_path_are_checked_like_registered_types(app_client):
    from yarl import URL

    sid = (await create_session(app_client))["session_id"]
    base = f"/api/sessions/{sid}/handlers/events"
    for ok in ("*", "orders%2Fpaid", "a.b:c"):  # valid names, no such handler
        resp = await app_client.delete(URL(f"{base}/{ok}", encoded=True))
        assert resp.status == 404, ok
    for bad in ("a%20b", "x%00", "a%09b", "x" * 129):
        resp = await app_client.delete(URL(f"{base}/{bad}", encoded=True))
        assert resp.status == 422, bad
        assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_one_identifier_rule_everywhere(app_client):
    """protocol.grammar.Id is the rule of every path id and *_id query parameter; a leading
    "_" is allowed everywhere (the observability queries once refused it), "-" is not."""
    for path in ("/api/sessions/_x", "/api/engines/_x", "/api/auth/keys/_x"):
        assert (await app_client.get(path)).status == 404, path
    for path in ("/api/observability/logs", "/api/observability/traces", "/api/engines"):
        resp = await app_client.get(path, params={"session_id": "_x"})
        assert resp.status == 200, path
        resp = await app_client.get(path, params={"session_id": "-x"})
        assert resp.status == 422, path
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "session_id"


async def test_grammar_is_checked_when_the_body_is_decoded(app_client):
    """The request models' annotated types refuse a bad type or name with the rule in words."""
    sid = (await create_session(app_client))["session_id"]
    cases = [
        (f"/api/sessions/{sid}/commands", {"command_type": "1x"}, "command_type", "must start with a letter"),
        (f"/api/sessions/{sid}/events", {"event_type": "a b"}, "event_type", "must start with a letter"),
        (
            f"/api/sessions/{sid}/commands/batch",
            {"commands": [{"command_type": "ok"}, {"command_type": "-"}]},
            "commands[1].command_type",
            "must start with a letter",
        ),
        ("/api/engines", {"engine_type": "DummyEngine", "session_id": "../x"}, "session_id", "not a valid identifier"),
        (f"/api/sessions/{sid}/tools", {"function_code": "def f(): pass", "name": "1f"}, "name", "Python identifier"),
        (f"/api/sessions/{sid}/tools", {"function_code": "  "}, "function_code", "Python source"),
        (f"/api/sessions/{sid}/tools", {"function_code": "def f(): pass", "timeout": 0}, "timeout", "> 0"),
        ("/api/observability/logs", {"message": "m", "session_id": "../x"}, "session_id", "not a valid identifier"),
    ]
    for path, body, field, words in cases:
        resp = await app_client.post(path, json=body)
        assert resp.status == 422, (path, body)
        details = assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]
        assert details["field"] == field and words in details["issue"], (body, details)


async def test_100_continue_only_after_the_credential_is_checked(aiohttp_client, make_settings):
    """aiohttp answers "Expect: 100-continue" before any check; the daemon answers it when the
    body is about to be read, so a client without a credential is not invited to upload."""
    client, local = await start(aiohttp_client, make_settings)
    body = b'{"name": "after-continue"}'

    def head(auth: str) -> bytes:
        return (
            f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()

    reader, writer = await raw(client, head(""))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 401"), answer  # no "100 Continue" first
    writer.close()

    reader, writer = await raw(client, head(f"Authorization: Bearer {local}\r\n"))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
    writer.write(body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 201"), answer
    writer.close()


async def test_an_unknown_expectation_is_417_in_the_envelope(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    resp = await client.post("/api/sessions", json={}, headers={"Authorization": f"Bearer {local}", "Expect": "200-ok"})
    assert resp.status == 417
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert resp.headers.get("X-Request-ID")


async def test_a_request_without_expect_does_not_pay_for_the_check(aiohttp_client, make_settings):
    """Every request goes through the guard: the Expect check runs only for a request that
    sends the header (it looked the request's state up, a raised KeyError, on every one)."""
    client, local = await start(aiohttp_client, make_settings)
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is limits.check_expectation.__code__:
            calls.append(frame.f_code.co_name)

    headers = {"Authorization": f"Bearer {local}"}
    sys.setprofile(profile)
    try:
        plain = await client.post("/api/sessions", json={}, headers=headers)
        expecting = await client.post("/api/sessions", json={}, headers={**headers, "Expect": "200-ok"})
    finally:
        sys.setprofile(None)
    assert (plain.status, expecting.status) == (201, 417)
    assert calls == ["check_expectation"], calls  # the second request's only


async def test_an_unknown_expectation_is_answered_after_the_guards_checks(aiohttp_client, make_settings):
    """Host and Origin (a DNS-rebinding page), then the credential, come first: a request
    that fails them learns that, not how its Expect header was taken."""
    client, local = await start(aiohttp_client, make_settings)
    cases = [
        ({"Host": "evil.example", "Authorization": f"Bearer {local}"}, 403, "FORBIDDEN"),
        ({"Origin": "http://evil.example", "Authorization": f"Bearer {local}"}, 403, "FORBIDDEN"),
        ({}, 401, "UNAUTHORIZED"),
        ({"Authorization": "Bearer lgk_not_a_key"}, 401, "UNAUTHORIZED"),
    ]
    for headers, status, code in cases:
        resp = await client.post("/api/sessions", json={}, headers={**headers, "Expect": "200-ok"})
        assert resp.status == status, (headers, await resp.text())
        assert_envelope(await resp.json(), code)


@pytest.mark.parametrize("method,path", [("POST", "/api/no-such-thing"), ("PUT", "/api/sessions")])
async def test_no_100_continue_for_a_path_no_route_takes(aiohttp_client, make_settings, method, path):
    """A 404 or a 405 answers Expect as every route does: no "100 Continue" before the checks
    (aiohttp's default, for answers no route makes), and 417 for another expectation."""
    client, local = await start(aiohttp_client, make_settings)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    ).encode()
    reader, writer = await raw(client, head)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert not answer.startswith(b"HTTP/1.1 100"), answer
    writer.close()
    resp = await client.request(method, path, data=b"{}", headers={"Expect": "200-ok", **bearer(local)})
    assert resp.status == 417
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    resp = await client.request(method, path, data=b"{}", headers={"Expect": "200-ok"})
    assert resp.status == 401  # the guard's checks first, as on every route


async def test_an_http_1_0_expectation_is_ignored(aiohttp_client, make_settings):
    """RFC 9110: a server ignores Expect: 100-continue from an HTTP/1.0 client."""
    client, local = await start(aiohttp_client, make_settings)
    body = b"{}"
    head = (
        f"POST /api/sessions HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {local}\r\n"
        f"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await raw(client, head + body)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.0 201") or answer.startswith(b"HTTP/1.1 201"), answer
    writer.close()
