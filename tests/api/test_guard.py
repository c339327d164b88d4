"""Browser attacks on TCP: DNS rebinding (Host), cross-site requests and WebSocket hijacking
(Origin), CORS preflights; over plain HTTP and over WebSocket handshakes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from llmgine_daemon.api.origins import HostPolicy, normalize_origin, split_host
from llmgine_daemon.paths import ConfigError

from tests.api.secutil import WS_PATH, bearer, new_session, start
from tests.conftest import assert_envelope

LISTED = "http://localhost:3000"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "",
        "   ",
        "[::1",
        "a b",
        "user@127.0.0.1",
        "10.0.0.1",
    ],
)
async def test_foreign_host_is_403(aiohttp_client, make_settings, host):
    client, local = await start(aiohttp_client, make_settings)
    for path in ("/api/health", "/api/sessions"):
        resp = await client.get(path, headers={"Host": host, **bearer(local)})
        assert resp.status == 403, (host, path)
        assert_envelope(await resp.json(), "FORBIDDEN")


async def test_a_request_line_with_an_absolute_uri_is_judged_by_its_host(aiohttp_client, make_settings):
    # RFC 9112 3.2.2: with an absolute URI in the request line, the server uses its authority
    # and ignores Host. aiohttp routed on the path and the guard checked only the Host header,
    # so `GET http://evil.example/api/sessions` with an allowed Host was served.
    client, local = await start(aiohttp_client, make_settings)

    async def status_of(target: str, host: str = "127.0.0.1") -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {local}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        return int(answer.split(b" ", 2)[1])

    for target in (
        "http://evil.example/api/sessions",
        "http://evil.example:80/api/health",
        "http://u@127.0.0.1/api/health",
    ):
        assert await status_of(target) == 403, target
    for target in ("http://127.0.0.1/api/sessions", "HTTP://localhost:8000/api/health?x=1", "/api/health"):
        assert await status_of(target) == 200, target
    # the URI's host is taken, whatever the header says
    assert await status_of("http://localhost/api/health", host="evil.example") == 200


async def test_allowed_hosts(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_ALLOWED_HOSTS="myhost.lan,.corp.example")
    for host in (
        "localhost",
        "localhost:8000",
        "127.0.0.1:1",
        "[::1]:8000",
        "LOCALHOST.",
        "myhost.lan",
        "api.corp.example:9",
    ):
        resp = await client.get("/api/status", headers={"Host": host, **bearer(local)})
        assert resp.status == 200, host
    resp = await client.get("/api/status", headers={"Host": "corp.example.evil", **bearer(local)})
    assert resp.status == 403


def test_host_policy_units(make_settings):
    wild = HostPolicy(make_settings(API_HOST="0.0.0.0"))
    assert wild.allows("192.168.1.5:8000") and not wild.allows("rebind.example")
    bound = HostPolicy(make_settings(API_HOST="192.168.1.5"))
    assert bound.allows("192.168.1.5") and not bound.allows("192.168.1.6")
    assert HostPolicy(make_settings(LLMGINE_ALLOWED_HOSTS="*")).allows("anything.example")
    assert split_host("[::1]:80") == ("::1", 80) and split_host("h:99999") is None
    assert normalize_origin("HTTP://LocalHost:80/") == "http://localhost"
    assert normalize_origin("null") is None and normalize_origin("file://x") is None
    # A browser extension's or an app's webview origin may be listed; a URL with a path, or a
    # host without a scheme, is no origin (and refused where it is given: settings_parsers.origins).
    assert normalize_origin("chrome-extension://AbCdEf/") == "chrome-extension://abcdef"
    assert normalize_origin("tauri://localhost") == "tauri://localhost"
    for junk in ("localhost:3000", "app.example.com", "http://localhost:3000/app", "http://u@h", "*"):
        assert normalize_origin(junk) is None, junk
        with pytest.raises(ConfigError, match=r"security\.cors_origins = .*(is not an origin|'\*' is not allowed)"):
            make_settings(CORS_ORIGINS=f"http://localhost:3000,{junk}")
    assert make_settings(CORS_ORIGINS="http://localhost:3000,chrome-extension://abcdef")["security.cors_origins"] == [
        "http://localhost:3000",
        "chrome-extension://abcdef",
    ]


async def test_websocket_with_foreign_host_is_403(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    s = await new_session(client, local)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(
            WS_PATH.format(session_id=s["session_id"]), headers={"Host": "evil.example", **bearer(local)}
        )
    assert err.value.status == 403


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://localhost:3000.evil.example",
        "https://localhost:3000",
        "http://localhost:3001",
        "file://",
        "http://localhost:3000/x",
    ],
)
async def test_foreign_origin_is_403_and_never_echoed(aiohttp_client, make_settings, origin):
    client, local = await start(aiohttp_client, make_settings, CORS_ORIGINS=LISTED)
    s = await new_session(client, local)
    for method, path in (
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions"),
        ("DELETE", f"/api/sessions/{s['session_id']}"),
    ):
        resp = await client.request(method, path, headers={"Origin": origin, **bearer(local)})
        assert resp.status == 403, (origin, method)
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert_envelope(await resp.json(), "FORBIDDEN")
    # Preflight: refused, nothing allowed.
    resp = await client.options("/api/sessions", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    # WebSocket hijacking: the handshake is refused even with a valid credential.
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(WS_PATH.format(session_id=s["session_id"]), headers={"Origin": origin, **bearer(local)})
    assert err.value.status == 403
    # The session is untouched.
    assert (await (await client.get(f"/api/sessions/{s['session_id']}", headers=bearer(local))).json())[
        "status"
    ] == "active"


async def test_listed_origin_cors(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, CORS_ORIGINS=f"{LISTED},https://app.example")
    resp = await client.options(
        "/api/sessions",
        headers={
            "Origin": LISTED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == LISTED
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "X-Session-Token" in resp.headers["Access-Control-Allow-Headers"]
    # Every request header the API reads may be sent by a page: a safe retry
    # (Idempotency-Key), a wait (Prefer), a trace (traceparent), a resumed stream.
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"idempotency-key", "prefer", "traceparent", "tracestate", "last-event-id", "x-request-id"} <= allowed
    assert "Origin" in resp.headers["Vary"]
    # Preflight of a path with a parameter works too (no OPTIONS route anywhere).
    resp = await client.options(
        "/api/sessions/abc", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"}
    )
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # The actual request: echoed exactly, never "*"; error responses carry it too.
    resp = await client.post("/api/sessions", json={}, headers={"Origin": LISTED, **bearer(local)})
    assert resp.status == 201
    assert resp.headers["Access-Control-Allow-Origin"] == LISTED
    assert "RateLimit" in resp.headers["Access-Control-Expose-Headers"]
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"idempotent-replayed", "preference-applied", "traceparent"} <= exposed
    resp = await client.get("/api/sessions", headers={"Origin": LISTED})
    assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == LISTED
    # A browser WebSocket from a listed origin with a token subprotocol.
    s = await new_session(client, local)
    ws = await client.ws_connect(
        WS_PATH.format(session_id=s["session_id"]),
        origin=LISTED,
        protocols=("llmgine", f"llmgine.bearer.{s['session_token']}"),
    )
    await ws.send_str("ok")
    assert (await ws.receive()).data == "ok"
    await ws.close()


async def test_a_listed_extension_origin_gets_cors(aiohttp_client, make_settings):
    """A browser extension's pages send Origin chrome-extension://ID (an app's webview tauri://
    localhost): listed, it is served like any listed origin; it could not be listed before."""
    extension = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    client, local = await start(aiohttp_client, make_settings, CORS_ORIGINS=f"{LISTED},{extension}")
    resp = await client.options("/api/sessions", headers={"Origin": extension, "Access-Control-Request-Method": "POST"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == extension
    resp = await client.post("/api/sessions", json={}, headers={"Origin": extension, **bearer(local)})
    assert resp.status == 201 and resp.headers["Access-Control-Allow-Origin"] == extension
    other = "chrome-extension://ponmlkjihgfedcbaponmlkjihgfedcba"
    resp = await client.post("/api/sessions", json={}, headers={"Origin": other, **bearer(local)})
    assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers


async def test_same_origin_is_allowed(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    own = f"http://127.0.0.1:{client.port}"
    resp = await client.post("/api/sessions", json={}, headers={"Origin": own, **bearer(local)})
    assert resp.status == 201
    assert "Access-Control-Allow-Origin" not in resp.headers  # not needed, not given


async def test_same_origin_behind_a_tls_proxy_is_allowed(aiohttp_client, make_settings):
    """README's nginx in front (listen 443 ssl; proxy_set_header Host $host): a page it serves,
    /docs included, sends Origin https://NAME with its POSTs and WebSocket handshakes, and the
    Host is NAME. That is this daemon's own origin too; another name or port is not."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_ALLOWED_HOSTS="llm.example.com")
    proxied = {"Host": "llm.example.com", **bearer(local)}
    resp = await client.post("/api/sessions", json={}, headers={"Origin": "https://llm.example.com", **proxied})
    assert resp.status == 201, await resp.text()
    assert "Access-Control-Allow-Origin" not in resp.headers  # same origin: not needed, not given
    sid = (await resp.json())["session_id"]
    ws = await client.ws_connect(
        WS_PATH.format(session_id=sid), headers={"Origin": "https://llm.example.com", **proxied}
    )
    await ws.close()
    for origin in ("https://evil.example", "https://llm.example.com:8443", "https://sub.llm.example.com"):
        resp = await client.post("/api/sessions", json={}, headers={"Origin": origin, **proxied})
        assert resp.status == 403, origin
        assert_envelope(await resp.json(), "FORBIDDEN")


async def test_unix_socket_skips_browser_checks_but_not_the_uid(unix_client):
    # Browsers cannot reach a Unix socket; the peer uid is the check there.
    resp = await unix_client.get("/api/status", headers={"Host": "evil.example"})
    assert resp.status == 200
