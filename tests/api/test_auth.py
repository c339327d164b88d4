"""Credentials: API keys (create/list/revoke/expiry), session tokens, the local CLI key, and
the walk of every route with every kind of bad credential."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from typing import Any

import aiohttp
import pytest
from llmgine_daemon.api.guard import ANY_SCOPE_PATHS, SESSION_FILTERED, is_open
from llmgine_daemon.api.keys import CREDENTIALS
from llmgine_daemon.api.util import checks_own_scope

from tests.api.secutil import WS_PATH, bearer, expire, new_key, new_session, start
from tests.conftest import assert_envelope
from tests.dbtools import dump_all
from tests.streams.conftest import sse_frames

KEY_RE = re.compile(r"^lgk_[0-9a-f]{12}_[A-Za-z0-9_\-]{40,}$")
TOKEN_RE = re.compile(r"^lgs_[0-9a-f]{12}_[A-Za-z0-9_\-]{40,}$")
# Requests of the walk in flight at once (test_every_route_refuses_bad_credentials).
WALK_AT_ONCE = 100


async def test_key_lifecycle(aiohttp_client, make_settings, home):
    client, local = await start(aiohttp_client, make_settings)
    created = await new_key(client, local, name="ci", expires_in=30 * 86400)
    assert KEY_RE.match(created["key"]) and created["name"] == "ci"
    assert created["key"].startswith(created["prefix"] + "_")
    assert created["expires_at"] > created["created_at"]
    key = created["key"]
    assert (await client.get("/api/sessions", headers=bearer(key))).status == 200

    listing = await (await client.get("/api/auth/keys", headers=bearer(local))).json()
    shown = {k["key_id"]: k for k in listing["keys"]}
    assert listing["total"] == 2  # the local CLI key is listed too
    mine = shown[created["key_id"]]
    assert mine["state"] == "active" and mine["kind"] == "user" and mine["last_used_at"]
    assert "key" not in mine and key not in await (await client.get("/api/auth/keys", headers=bearer(local))).text()
    assert any(k["kind"] == "local" and k["name"].startswith("local-cli@") for k in listing["keys"])

    # Only the hash is stored.
    assert key.split("_", 2)[2] not in dump_all(client)

    resp = await client.delete(f"/api/auth/keys/{created['key_id']}", headers=bearer(local))
    assert resp.status == 200 and (await resp.json())["state"] == "revoked"
    resp = await client.get("/api/sessions", headers=bearer(key))
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert key not in await resp.text()
    # Revoking twice is fine; an unknown key is 404 KEY_NOT_FOUND.
    assert (await client.delete(f"/api/auth/keys/{created['key_id']}", headers=bearer(local))).status == 200
    resp = await client.get("/api/auth/keys/000000000000", headers=bearer(local))
    assert_envelope(await resp.json(), "KEY_NOT_FOUND")


async def test_keys_survive_a_restart_hashed(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    key = (await new_key(client, local))["key"]
    await client.close()
    client, local2 = await start(aiohttp_client, make_settings)
    assert local2 == local  # the local key file is kept while it is valid
    assert (await client.get("/api/status", headers=bearer(key))).status == 200


async def test_expired_key_is_refused(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    created = await new_key(client, local, expires_in=3600)
    await expire(client, created["key_id"])
    resp = await client.get("/api/status", headers=bearer(created["key"]))
    assert resp.status == 401
    assert "expired" in assert_envelope(await resp.json(), "UNAUTHORIZED")["message"]
    info = await (await client.get(f"/api/auth/keys/{created['key_id']}", headers=bearer(local))).json()
    assert info["state"] == "expired"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 10, "expires_at": "2999-01-01T00:00:00Z"}, "expires_in"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"name": "x" * 101}, "name"),
        ({"scopes": ["all"]}, "scopes"),
    ],
)
async def test_key_create_validation(aiohttp_client, make_settings, body, field):
    client, local = await start(aiohttp_client, make_settings)
    resp = await client.post("/api/auth/keys", json=body, headers=bearer(local))
    assert resp.status == 422
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field


async def test_session_token_scope(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    a, b = await new_session(client, local), await new_session(client, local)
    assert TOKEN_RE.match(a["session_token"]) and a["session_token"] != b["session_token"]
    token = {"X-Session-Token": a["session_token"]}
    assert (await client.get(f"/api/sessions/{a['session_id']}", headers=token)).status == 200
    # Bearer works too: the prefix says what it is.
    assert (await client.get(f"/api/sessions/{a['session_id']}", headers=bearer(a["session_token"]))).status == 200
    for method, path in [
        ("GET", f"/api/sessions/{b['session_id']}"),
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/status"),
        ("GET", "/api/config"),
        ("POST", "/api/shutdown"),
        ("GET", "/api/auth/keys"),
        ("POST", "/api/auth/keys"),
        ("GET", "/api/engines"),
    ]:
        resp = await client.request(method, path, headers=token)
        assert resp.status == 403, (method, path)
        assert_envelope(await resp.json(), "FORBIDDEN")
    # No such route, or not that method: 404/405 as for any credential (the routes are no
    # secret: the token may read /openapi.json), not a 403 saying the token does not open its
    # own session.
    for method, path, status, code in [
        ("GET", "/api/nope", 404, "NOT_FOUND"),
        ("GET", f"/api/sessions/{a['session_id']}/evnets", 404, "NOT_FOUND"),
        ("DELETE", f"/api/sessions/{a['session_id']}/events", 405, "METHOD_NOT_ALLOWED"),
    ]:
        resp = await client.request(method, path, headers=token)
        assert resp.status == status, (method, path, await resp.text())
        assert_envelope(await resp.json(), code)
    # The engine collection, filtered to its own session, is in scope.
    resp = await client.get(f"/api/engines?session_id={b['session_id']}", headers=token)
    assert resp.status == 403
    # The engine types (no one's data), which a page needs to create an engine in its own
    # session (which the token may), were 403 too.
    resp = await client.get("/api/engines/types", headers=token)
    assert resp.status == 200 and "DummyEngine" in {t["engine_type"] for t in (await resp.json())["types"]}
    resp = await client.post(
        "/api/engines", json={"engine_type": "DummyEngine", "session_id": a["session_id"]}, headers=token
    )
    assert resp.status == 201, await resp.text()
    # A second token; both end with the session.
    resp = await client.post(f"/api/sessions/{a['session_id']}/token", headers=bearer(local))
    assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
    second = (await resp.json())["session_token"]
    assert (await client.get(f"/api/sessions/{a['session_id']}", headers={"X-Session-Token": second})).status == 200
    assert (await client.delete(f"/api/sessions/{a['session_id']}", headers=token)).status == 200
    for t in (a["session_token"], second):
        resp = await client.get(f"/api/sessions/{a['session_id']}", headers={"X-Session-Token": t})
        assert resp.status == 401
    resp = await client.post(f"/api/sessions/{a['session_id']}/token", headers=bearer(local))
    assert_envelope(await resp.json(), "SESSION_CLOSED")


async def test_session_token_survives_restart_until_session_ends(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    await client.close()
    client, local = await start(aiohttp_client, make_settings)
    headers = {"X-Session-Token": s["session_token"]}
    assert (await client.get(f"/api/sessions/{s['session_id']}", headers=headers)).status == 200
    resp = await client.delete(f"/api/sessions/{s['session_id']}?purge=true", headers=bearer(local))
    assert resp.status == 204
    assert (await client.get(f"/api/sessions/{s['session_id']}", headers=headers)).status == 401


async def test_unix_socket_owner_gets_a_session_token(unix_client):
    resp = await unix_client.post("/api/sessions", json={})
    assert resp.status == 201 and TOKEN_RE.match((await resp.json())["session_token"])
    assert (await unix_client.get("/api/auth/keys")).status == 200
    # No rate limit on the owner's socket by default: no headers either.
    assert "RateLimit" not in resp.headers


async def test_local_key_file(aiohttp_client, make_settings, home):
    client, local = await start(aiohttp_client, make_settings)
    path = home / "config" / "local.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert KEY_RE.match(local)
    # Revoke it: the next start mints (and writes) a new one.
    key_id = local.split("_")[1]
    assert (await client.delete(f"/api/auth/keys/{key_id}", headers=bearer(local))).status == 200
    await client.close()
    client, fresh = await start(aiohttp_client, make_settings)
    assert fresh != local and KEY_RE.match(fresh)
    assert (await client.get("/api/status", headers=bearer(fresh))).status == 200
    assert (await client.get("/api/status", headers=bearer(local))).status == 401
    assert not client.app[CREDENTIALS].has_user_keys()


async def test_api_key_secret_and_malformed_headers(aiohttp_client, make_settings):
    client, _ = await start(aiohttp_client, make_settings, API_KEY_SECRET="s3cr3t-marker-value")
    assert (await client.get("/api/status", headers=bearer("s3cr3t-marker-value"))).status == 200
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "s3cr3t-marker-value", "Token x"):
        resp = await client.get("/api/status", headers={"Authorization": header})
        assert resp.status == 401, header
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "s3cr3t-marker-value" not in await resp.text()


# -- the walk ----------------------------------------------------------------------------


def concrete(path: str, session_id: str) -> str:
    return re.sub(r"\{session_id[^}]*\}", session_id, re.sub(r"\{(?!session_id)[^}]+\}", "abc123", path))


async def test_every_route_refuses_bad_credentials(aiohttp_client, make_settings):
    """Every route the app has (new ones included, automatically) is walked.

    The requests go out together (at most WALK_AT_ONCE at a time): a credential that a
    PostgreSQL-backed daemon does not know makes it re-read the credentials, at most every
    MISS_SYNC_EVERY (bus/auth.py), and one by one that paced the ~700 requests to 37 s. Sent
    together they share the re-reads; each answer is still checked on its own."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_RATE_LIMIT_UNAUTHENTICATED="0")
    a, b = await new_session(client, local), await new_session(client, local)
    revoked = await new_key(client, local)
    await client.delete(f"/api/auth/keys/{revoked['key_id']}", headers=bearer(local))
    expired = await new_key(client, local, expires_in=60)
    await expire(client, expired["key_id"])
    cases = {
        "none": {},
        "bad": bearer("lgk_0123456789ab_" + "x" * 43),
        "garbage": bearer("not-a-key"),
        "revoked": bearer(revoked["key"]),
        "expired": bearer(expired["key"]),
        "bad token": {"X-Session-Token": "lgs_0123456789ab_" + "y" * 43},
    }
    other_token = {"X-Session-Token": b["session_token"]}
    at_once = asyncio.Semaphore(WALK_AT_ONCE)

    async def send(method: str, path: str, headers: dict[str, str]) -> tuple[int, str, Any]:
        async with at_once:
            body = {} if method in ("POST", "PUT", "PATCH") else None
            resp = await client.request(method, path, headers=headers, json=body)
            if resp.status in (401, 403):
                return resp.status, resp.headers.get("WWW-Authenticate", ""), await resp.json()
            await resp.read()
            return resp.status, "", None

    # (method, path, what was sent, what must come back: "open", 401 or 403)
    walk: list[tuple[str, str, str, str | int]] = []
    sends = []
    walked = 0
    for route in client.app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = concrete(route.resource.canonical, a["session_id"])
        method = "GET" if route.method == "*" else route.method
        for name, headers in cases.items():
            walk.append((method, path, name, "open" if is_open(path) else 401))
            sends.append(send(method, path, headers))
        # /openapi.json: any credential. The cross-session views (the queue, waiting) answer a
        # session token with its own session's commands only (tests/api/test_lifecycle*.py);
        # webhooks and schedules check the session of the rows they touch
        # (tests/api/test_webhooks.py, test_schedules.py).
        narrowed = route.resource.canonical in SESSION_FILTERED or checks_own_scope(route.handler)
        if path not in ANY_SCOPE_PATHS and not is_open(path) and not narrowed:
            walk.append((method, path, "other session's token", 403))
            sends.append(send(method, path, other_token))
        walked += 1
    for (method, path, name, expect), (status, challenge, payload) in zip(
        walk, await asyncio.gather(*sends), strict=True
    ):
        if expect == "open":
            # /api/health and the documentation pages' HTML and assets (api/openapi.py):
            # no credential needed, and a wrong one (another daemon's key) is ignored.
            assert status != 401, (method, path, name)
        elif expect == 401:
            assert status == 401, (method, path, name, status)
            assert challenge.startswith("Bearer"), (method, path)
            assert_envelope(payload, "UNAUTHORIZED")
        else:
            assert status == 403, (method, path, name, status)
            assert_envelope(payload, "FORBIDDEN")
    assert walked >= 10
    assert any(r.resource.canonical == WS_PATH for r in client.app.router.routes() if r.resource)


async def test_walk_over_websocket(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    a, b = await new_session(client, local), await new_session(client, local)
    path = WS_PATH.format(session_id=a["session_id"])
    for kwargs, status in [
        ({}, 401),
        ({"headers": bearer("nope")}, 401),
        ({"headers": {"X-Session-Token": b["session_token"]}}, 403),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect(path, **kwargs)
        assert err.value.status == status
    # Browser ways: query parameter, or a subprotocol next to "llmgine" (which is selected).
    ws = await client.ws_connect(f"{path}?token={a['session_token']}")
    await ws.send_str("hi")
    assert (await ws.receive()).data == "hi"
    await ws.close()
    ws = await client.ws_connect(path, protocols=("llmgine", f"llmgine.bearer.{a['session_token']}"))
    assert ws.protocol == "llmgine"
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(f"/api/sessions/{b['session_id']}/test-echo?token={a['session_token']}")
    assert err.value.status == 403
    # A query token is not accepted on ordinary requests (URLs end up in histories and logs),
    # not even when they ask for an event stream's type, as an EventSource does.
    resp = await client.get(f"/api/sessions/{a['session_id']}?token={a['session_token']}")
    assert resp.status == 401
    sse = {"Accept": "text/event-stream"}
    resp = await client.get(f"/api/sessions/{a['session_id']}?token={a['session_token']}", headers=sse)
    assert resp.status == 401
    resp = await client.get(f"/api/sessions/{a['session_id']}/events?token={a['session_token']}", headers=sse)
    assert resp.status == 401


async def test_revocation_closes_websockets_with_1008(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    key = await new_key(client, local)
    path = WS_PATH.format(session_id=s["session_id"])
    by_key = await client.ws_connect(path, headers=bearer(key["key"]))
    by_token = await client.ws_connect(path, headers={"X-Session-Token": s["session_token"]})
    by_local = await client.ws_connect(path, headers=bearer(local))
    await client.delete(f"/api/auth/keys/{key['key_id']}", headers=bearer(local))
    msg = await by_key.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    await client.delete(f"/api/sessions/{s['session_id']}", headers=bearer(local))
    msg = await by_token.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    # Others stay open.
    await by_local.send_str("still here")
    assert (await by_local.receive(timeout=10)).data == "still here"
    await by_local.close()


async def test_revocation_ends_event_streams_with_1008(aiohttp_client, make_settings):
    """An SSE stream is a WebSocket's equal: revoking the key that opened it ends it at once
    (stream.end, code 1008), before any later event; another key's stream goes on."""
    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    key = await new_key(client, local)
    sse = {"Accept": "text/event-stream"}
    by_key = await client.get("/api/events/stream", headers={**sse, **bearer(key["key"])})
    by_local = await client.get("/api/events/stream", headers={**sse, **bearer(local)})
    revoked, other = sse_frames(by_key), sse_frames(by_local)
    assert (await anext(revoked))["event"] == "stream.hello"
    assert (await anext(other))["event"] == "stream.hello"
    await client.delete(f"/api/auth/keys/{key['key_id']}", headers=bearer(local))
    resp = await client.post(
        f"/api/sessions/{s['session_id']}/events", json={"event_type": "AfterRevoke"}, headers=bearer(local)
    )
    assert resp.status == 201

    async def to_the_end() -> list[dict[str, str]]:
        return [frame async for frame in revoked]

    rest = await asyncio.wait_for(to_the_end(), 10)  # (unrevoked, it would never end)
    assert [f["event"] for f in rest] == ["stream.end"], rest
    assert json.loads(rest[0]["data"]) == {"type": "end", "code": 1008, "reason": "credential revoked"}
    assert (await anext(other))["event"] == "AfterRevoke"
    by_local.close()


async def test_key_expiring_while_a_websocket_is_open(aiohttp_client, make_settings):
    from llmgine_daemon.api.guard import GUARD
    from llmgine_daemon.api.sockets import close_expired

    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    key = await new_key(client, local, expires_in=3600)
    ws = await client.ws_connect(WS_PATH.format(session_id=s["session_id"]), headers=bearer(key["key"]))
    sse = await client.get("/api/events/stream", headers={"Accept": "text/event-stream", **bearer(key["key"])})
    frames = sse_frames(sse)
    assert (await anext(frames))["event"] == "stream.hello"
    app = client.app
    assert close_expired(app[CREDENTIALS], app[GUARD].sockets) == []
    await expire(client, key["key_id"])
    assert close_expired(app[CREDENTIALS], app[GUARD].sockets) == [key["key_id"]]
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    end = await asyncio.wait_for(anext(frames), 10)  # the event stream ends too
    assert end["event"] == "stream.end" and json.loads(end["data"])["code"] == 1008
