"""Rate limits: the spec's exact numbers, the headers, failed auth costing the IP, the
WebSocket connection limit, and the Unix socket. The limiter's clock is frozen: counts, not
timings."""

from __future__ import annotations

import re

import aiohttp
import pytest
from llmgine_daemon.api.ratelimit import RateLimiter

from tests.api.secutil import WS_PATH, bearer, freeze, new_key, new_session, start
from tests.conftest import assert_envelope

DEFAULTS = {"LLMGINE_RATE_LIMIT_AUTHENTICATED": "1000"}  # conftest turns it off otherwise
POLICY = re.compile(r'^"(\w+)";q=(\d+);w=60$')
STATE = re.compile(r'^"(\w+)";r=(\d+);t=(\d+)$')


def remaining(resp: aiohttp.ClientResponse) -> int:
    return int(STATE.match(resp.headers["RateLimit"]).group(2))


async def test_anonymous_100_per_minute_per_ip(aiohttp_client, make_settings):
    client, _ = await start(aiohttp_client, make_settings, **DEFAULTS)
    clock = freeze(client)
    for i in range(100):
        resp = await client.get("/api/health")
        assert resp.status == 200, i
        assert POLICY.match(resp.headers["RateLimit-Policy"]).groups() == ("anonymous", "100")
        assert remaining(resp) == 99 - i
    resp = await client.get("/api/health")
    assert resp.status == 429
    error = assert_envelope(await resp.json(), "RATE_LIMITED")
    assert error["details"]["limit"] == 100
    assert int(resp.headers["Retry-After"]) == 1  # 100/min: one token every 0.6 s
    assert remaining(resp) == 0 and "RateLimit-Policy" in resp.headers
    # A token comes back at the steady rate; a full minute refills the bucket.
    clock[0] += 0.6
    assert (await client.get("/api/health")).status == 200
    assert (await client.get("/api/health")).status == 429
    clock[0] += 60
    resp = await client.get("/api/health")
    assert resp.status == 200 and remaining(resp) == 99


async def test_failed_auth_counts_against_the_ip(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, **DEFAULTS)
    freeze(client)
    for i in range(100):
        resp = await client.get("/api/sessions", headers=bearer(f"wrong-{i}"))
        assert resp.status == 401
    # The brute-forcer now meets 429, whatever it sends...
    resp = await client.get("/api/sessions", headers=bearer("wrong-again"))
    assert resp.status == 429 and "Retry-After" in resp.headers
    assert (await client.get("/api/health")).status == 429
    # ...while the owner's key has its own bucket and is not locked out.
    resp = await client.get("/api/sessions", headers=bearer(local))
    assert resp.status == 200
    assert POLICY.match(resp.headers["RateLimit-Policy"]).groups() == ("key", "1000")


async def test_preflights_take_from_no_bucket(aiohttp_client, make_settings):
    """A page of a listed origin that pages with its key sends one preflight per distinct URL
    (browsers cache them per URL): those must not use up the IP's anonymous bucket, or the
    page's requests fail as unreadable CORS errors long before its key's limit."""
    origin = "http://localhost:3000"
    client, local = await start(
        aiohttp_client, make_settings, CORS_ORIGINS=origin, LLMGINE_RATE_LIMIT_UNAUTHENTICATED="3", **DEFAULTS
    )
    freeze(client)
    for after in range(10):
        path = f"/api/sessions?after={after}"
        resp = await client.options(
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert resp.status == 204, (after, await resp.text())
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        resp = await client.get(path, headers={"Origin": origin, **bearer(local)})
        assert resp.status == 200, (after, await resp.text())
        assert resp.headers["RateLimit-Policy"] == '"key";q=1000;w=60'
    # The IP's anonymous bucket is untouched: its 3 requests are all still there.
    for i in range(3):
        resp = await client.get("/api/health", headers={"Origin": origin})
        assert resp.status == 200 and remaining(resp) == 2 - i
    resp = await client.get("/api/health", headers={"Origin": origin})
    assert resp.status == 429 and resp.headers["Access-Control-Allow-Origin"] == origin


async def test_authenticated_1000_per_minute_per_key(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, **DEFAULTS)
    freeze(client)
    other = (await new_key(client, local))["key"]  # 1 request from local's bucket
    for i in range(999):
        resp = await client.get("/api/health", headers=bearer(local))
        assert resp.status == 200, i
    resp = await client.get("/api/health", headers=bearer(local))
    assert resp.status == 429
    assert_envelope(await resp.json(), "RATE_LIMITED")
    assert resp.headers["RateLimit-Policy"] == '"key";q=1000;w=60'
    # Another key is another bucket.
    resp = await client.get("/api/health", headers=bearer(other))
    assert resp.status == 200 and remaining(resp) == 999


async def test_limits_are_configurable(aiohttp_client, make_settings, home):
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text("[security.rate_limits]\nunauthenticated = 3\nauthenticated = 5\n")
    client, local = await start(aiohttp_client, make_settings)
    freeze(client)
    assert [(await client.get("/api/health")).status for _ in range(4)] == [200] * 3 + [429]
    assert [(await client.get("/api/status", headers=bearer(local))).status for _ in range(6)] == [200] * 5 + [429]


async def test_eleventh_websocket_in_a_minute(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, **DEFAULTS)
    clock = freeze(client)
    s = await new_session(client, local)
    path = WS_PATH.format(session_id=s["session_id"])
    for _ in range(10):
        ws = await client.ws_connect(path, headers=bearer(local))
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(path, headers=bearer(local))
    assert err.value.status == 429
    assert err.value.headers["RateLimit-Policy"] == '"websocket";q=10;w=60'
    assert int(err.value.headers["Retry-After"]) == 6
    # Plain requests are not affected by the WebSocket bucket.
    assert (await client.get("/api/status", headers=bearer(local))).status == 200
    clock[0] += 6
    ws = await client.ws_connect(path, headers=bearer(local))
    await ws.close()


async def test_one_session_token_cannot_use_up_its_address_websockets(aiohttp_client, make_settings):
    """The websocket bucket was the IP's alone: a session token's holder (a page on this
    machine, say) opening ten WebSockets a minute left every other client on 127.0.0.1 - other
    sessions' pages, the owner's own API key - none. It is now per IP and credential (per
    session for tokens, all its tokens together)."""
    client, local = await start(aiohttp_client, make_settings, **DEFAULTS)
    freeze(client)
    attacker, victim = await new_session(client, local), await new_session(client, local)
    minted = await client.post(f"/api/sessions/{attacker['session_id']}/token", headers=bearer(local))
    assert minted.status == 201
    tokens = [attacker["session_token"], (await minted.json())["session_token"]]
    path = WS_PATH.format(session_id=attacker["session_id"])
    for i in range(10):
        ws = await client.ws_connect(path, headers=bearer(tokens[i % 2]))
        await ws.close()
    for token in tokens:  # another token of the same session is the same bucket
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect(path, headers=bearer(token))
        assert err.value.status == 429
    for key, session in ((victim["session_token"], victim), (local, attacker)):
        ws = await client.ws_connect(WS_PATH.format(session_id=session["session_id"]), headers=bearer(key))
        await ws.close()


async def test_unix_socket_unlimited_by_default(unix_client):
    for _ in range(150):
        resp = await unix_client.get("/api/health")
        assert resp.status == 200
    assert "RateLimit" not in resp.headers


async def test_unix_socket_limited_by_uid_when_asked(make_settings, home):
    from aiohttp import web
    from llmgine_daemon.api.guard import GUARD
    from llmgine_daemon.app import create_app

    app = create_app(make_settings(LLMGINE_RATE_LIMIT_UNIX_SOCKET="true", LLMGINE_RATE_LIMIT_AUTHENTICATED="5"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, str(home / "r.sock"))
    await site.start()
    app[GUARD].limiter.clock = lambda: 5.0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(home / "r.sock"))) as session:
            statuses = []
            for _ in range(6):
                async with session.get("http://llmgine/api/health") as resp:
                    statuses.append(resp.status)
                    policy = resp.headers["RateLimit-Policy"]
            assert statuses == [200] * 5 + [429]
            assert policy == '"key";q=5;w=60'
    finally:
        await runner.cleanup()


def test_bucket_arithmetic():
    now = [0.0]
    limiter = RateLimiter({"p": 60}, clock=lambda: now[0])
    for _ in range(60):
        assert limiter.hit("p", "k").allowed
    refused = limiter.hit("p", "k")
    assert not refused.allowed and refused.retry_after == 1 and refused.reset == 60
    now[0] += 30
    state = limiter.peek("p", "k")
    assert state.remaining == 30 and state.reset == 30
    assert limiter.hit("off", "k") is None


def test_full_buckets_are_forgotten_from_the_least_recently_used_end():
    """Buckets full again are dropped by the next hits, least recently used first (a hit's own
    share of the work, never a scan of all); one still short of tokens is kept and limits."""
    now = [0.0]
    limiter = RateLimiter({"p": 60, "q": 2}, clock=lambda: now[0])
    for _ in range(60):
        assert limiter.hit("p", "busy").allowed
    for ip in range(20_000):  # a scan from many addresses, one request each
        assert limiter.hit("q", f"10.0.{ip // 256}.{ip % 256}").allowed
    assert len(limiter) == 20_001
    now[0] = 30.0  # each scanned bucket is full again; "busy" has refilled half
    state = limiter.hit("p", "busy", cost=31)
    assert state is not None and not state.allowed and state.remaining == 30  # still limited
    assert len(limiter) == 20_001  # "busy" was the oldest and not full: nothing to drop yet
    assert limiter.hit("q", "fresh").allowed  # "busy" moved to the end: the full ones go
    assert len(limiter) == 2
    assert limiter.hit("q", "fresh").allowed
    refused = limiter.hit("q", "fresh")
    assert refused is not None and not refused.allowed and refused.retry_after == 30
    now[0] = 100.0  # a whole window unused: every bucket is full
    assert limiter.hit("q", "other").allowed and len(limiter) == 1


async def test_websocket_messages_take_from_the_request_bucket(aiohttp_client, make_settings):
    """A WebSocket was a way around the rate limit: its messages cost nothing, and a session
    token's client sending `subscribe` messages (each a replay from the store) on two streams
    made another session's requests 80 times slower. Each message now costs a request of its
    credential's bucket (the session's, for its tokens); past it, it is answered RATE_LIMITED
    and not acted on, and the stream stays open."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_RATE_LIMIT_AUTHENTICATED="6")
    clock = freeze(client)
    session = await new_session(client, local)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    async with client.ws_connect(f"/api/sessions/{sid}/events/stream", headers=token) as ws:  # 1
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        for _ in range(5):  # 2..6
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json(timeout=10) == {"type": "pong"}
        await ws.send_json({"type": "subscribe", "event_types": ["A*"]})
        refused = await ws.receive_json(timeout=10)
        assert refused["type"] == "error" and refused["error"]["code"] == "RATE_LIMITED", refused
        assert refused["error"]["details"]["policy"] == "key"
        # The same bucket as the session's requests.
        resp = await client.get(f"/api/sessions/{sid}", headers=token)
        assert resp.status == 429
        clock[0] += 10  # one request's worth back
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}


@pytest.mark.parametrize("limited", [False, True])
async def test_websocket_messages_on_the_unix_socket_follow_its_requests(make_settings, home, limited):
    """Requests and WebSocket messages take from one bucket by one rule (guard.request_bucket):
    the owner on the Unix socket is not limited, on a WebSocket either, unless
    ``rate_limits.unix_socket`` limits both by uid."""
    from aiohttp import web
    from llmgine_daemon.api.guard import GUARD
    from llmgine_daemon.app import create_app

    env = {"LLMGINE_RATE_LIMIT_AUTHENTICATED": "4", "LLMGINE_RATE_LIMIT_UNIX_SOCKET": str(limited).lower()}
    app = create_app(make_settings(**env))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, str(home / "w.sock"))
    await site.start()
    app[GUARD].limiter.clock = lambda: 5.0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(home / "w.sock"))) as session:
            async with session.post("http://llmgine/api/sessions", json={}) as resp:  # 1
                sid = (await resp.json())["session_id"]
            async with session.ws_connect(f"http://llmgine/api/sessions/{sid}/events/stream") as ws:  # 2
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                answers = []
                for _ in range(4):  # 3, 4, then over
                    await ws.send_json({"type": "ping"})
                    answers.append((await ws.receive_json(timeout=10))["type"])
            expected = ["pong", "pong", "error", "error"] if limited else ["pong"] * 4
            assert answers == expected
    finally:
        await runner.cleanup()
