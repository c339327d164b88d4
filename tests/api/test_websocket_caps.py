"""Open WebSockets per credential: an API key, or a session (all its tokens together), holds
at most max_websockets_per_credential at once (409 LIMIT_REACHED naming the setting); the socket
owner is not capped per credential (only max_websockets applies to it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from llmgine_daemon.api import stream_conns, streams
from llmgine_daemon.api.guard import GUARD
from llmgine_daemon.api.limits import runner_kwargs
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import read_local_key

from tests.api.secutil import WS_PATH, bearer, new_key, new_session, start
from tests.clitools import free_port
from tests.conftest import assert_envelope
from tests.eventually import eventually

CAP = {"LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL": "3", "LLMGINE_RATE_LIMIT_WEBSOCKET": "0"}


async def refused(client, path: str, headers: dict[str, str]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(path, headers=headers)
    assert err.value.status == 409


async def held(client, holder: str, count: int) -> None:
    """Wait until the server counts ``count`` WebSockets for ``holder`` (it notices a close
    when the handler ends)."""
    by_holder = client.app[GUARD].websockets_by_holder
    await eventually(lambda: by_holder.get(holder, 0) == count, message=f"{count} for {holder}: {by_holder}")


async def test_a_session_holds_at_most_the_cap_whatever_token_it_uses(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, **CAP)
    s = await new_session(client, local)
    sid = s["session_id"]
    second = (await (await client.post(f"/api/sessions/{sid}/token", headers=bearer(local))).json())["session_token"]
    path = WS_PATH.format(session_id=sid)
    first_token, second_token = {"X-Session-Token": s["session_token"]}, {"X-Session-Token": second}
    open_ = [await client.ws_connect(path, headers=h) for h in (first_token, second_token, first_token)]
    for headers in (first_token, second_token):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect(path, headers=headers)
        assert err.value.status == 409
    # The refusal is the one envelope, naming the setting.
    resp = await client.get(
        path,
        headers={
            **first_token,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert resp.status == 409
    error = assert_envelope(await resp.json(), "LIMIT_REACHED")
    assert error["details"] == {"limit": "max_websockets_per_credential", "max": 3}
    assert "security.limits.max_websockets_per_credential" in error["message"]

    # Others are not affected: another session, an API key.
    other = await new_session(client, local)
    theirs = await client.ws_connect(
        WS_PATH.format(session_id=other["session_id"]), headers={"X-Session-Token": other["session_token"]}
    )
    key = (await new_key(client, local))["key"]
    by_key = [await client.ws_connect(path, headers=bearer(key)) for _ in range(3)]
    await refused(client, path, bearer(key))

    # Closing one frees a slot for the session.
    await open_[0].close()
    await held(client, f"session:{sid}", 2)
    again = await client.ws_connect(path, headers=second_token)
    for ws in (*open_[1:], again, theirs, *by_key):
        await ws.close()
    await held(client, f"session:{sid}", 0)
    assert client.app[GUARD].websockets_by_holder == {}


async def test_default_cap_is_sixteen(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_RATE_LIMIT_WEBSOCKET="0")
    s = await new_session(client, local)
    path = WS_PATH.format(session_id=s["session_id"])
    token = {"X-Session-Token": s["session_token"]}
    sockets = [await client.ws_connect(path, headers=token) for _ in range(16)]
    await refused(client, path, token)
    for ws in sockets:
        await ws.close()


async def test_the_socket_owner_is_not_capped_per_credential(make_settings, home):
    app = create_app(make_settings(LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL="2"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, str(home / "w.sock"))
    await site.start()
    try:
        async with aiohttp.ClientSession(
            base_url="http://llmgine", connector=aiohttp.UnixConnector(path=str(home / "w.sock"))
        ) as session:
            sid = (await (await session.post("/api/sessions", json={})).json())["session_id"]
            sockets = [await session.ws_connect(f"/api/sessions/{sid}/events/stream") for _ in range(5)]
            assert len(sockets) == 5 and app[GUARD].open_websockets == 5
            for ws in sockets:
                await ws.close()
    finally:
        await runner.cleanup()


async def test_event_streams_count_against_the_same_cap(aiohttp_client, make_settings):
    """An EventSource (SSE) holds its connection as long as a WebSocket: one credential cannot
    get around the cap by streaming over SSE instead."""
    client, local = await start(aiohttp_client, make_settings, **CAP)
    s = await new_session(client, local)
    sid = s["session_id"]
    path = f"/api/sessions/{sid}/events/stream"
    token = {"X-Session-Token": s["session_token"], "Accept": "text/event-stream"}
    streams = []
    for _ in range(3):
        resp = await client.get(path, headers=token)
        assert resp.status == 200, await resp.text()
        streams.append(resp)
    await held(client, f"session:{sid}", 3)
    resp = await client.get(path, headers=token)
    assert resp.status == 409
    error = assert_envelope(await resp.json(), "LIMIT_REACHED")
    assert error["details"] == {"limit": "max_websockets_per_credential", "max": 3}
    await refused(client, path, {"X-Session-Token": s["session_token"]})  # nor a WebSocket
    for stream in streams:
        stream.close()
    await held(client, f"session:{sid}", 0)


@contextlib.asynccontextmanager
async def daemon_session(
    settings: Any,
) -> AsyncIterator[tuple[web.Application, aiohttp.ClientSession, str, dict[str, str]]]:
    """The app on a real TCP server with the daemon's own options (aiohttp's TestServer cancels
    a handler whose client hangs up; the daemon does not), a client of it, a new session's id
    and the headers that open an SSE stream of it with its token."""
    app = create_app(settings)
    runner = web.AppRunner(app, **runner_kwargs(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            local = bearer(read_local_key(settings.paths) or "")
            resp = await http.post("/api/sessions", json={}, headers=local)
            assert resp.status == 201, await resp.text()
            s = await resp.json()
            token = {"X-Session-Token": s["session_token"], "Accept": "text/event-stream"}
            yield app, http, s["session_id"], token
    finally:
        await runner.cleanup()


async def open_sse(http: aiohttp.ClientSession, path: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    resp = await http.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.content.readline()).startswith(b"retry:")  # the hello came
    return resp


async def test_an_event_stream_frees_its_slot_when_the_client_disconnects(make_settings, monkeypatch):
    """A client that drops its SSE connections gets their slots back at once, not at the next
    heartbeat (made an hour here, so only noticing the closed connection frees them): it
    reconnects up to the cap, all at the same time."""
    monkeypatch.setattr(streams, "HEARTBEAT", 3600.0)
    async with daemon_session(make_settings(**CAP)) as (app, http, sid, token):
        path = f"/api/sessions/{sid}/events/stream"
        by_holder = app[GUARD].websockets_by_holder
        for _ in range(2):
            opened = await asyncio.gather(*(open_sse(http, path, token) for _ in range(3)))
            assert by_holder.get(f"session:{sid}") == 3
            refused = await http.get(path, headers=token)
            assert refused.status == 409
            refused.release()
            for resp in opened:
                resp.close()  # the connection, not a clean end of the stream
            await eventually(lambda: not by_holder, message=f"slots still held: {by_holder}")
        assert app[GUARD].open_websockets == 0


async def test_idle_event_streams_do_not_each_wake_to_look_for_their_client(make_settings, monkeypatch):
    """Idle SSE streams wait for an event, their heartbeat or their client's departure: one
    sweep looks at all their connections every GONE_CHECK, not a timer per stream (1,000
    idle streams were 2,000 wake-ups a second). Counted as the loop's timers due within two
    GONE_CHECKs, before and with 20 idle streams open (the heartbeat made an hour)."""
    monkeypatch.setattr(streams, "HEARTBEAT", 3600.0)
    settings = make_settings(LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL="0", LLMGINE_RATE_LIMIT_WEBSOCKET="0")
    loop: Any = asyncio.get_running_loop()

    def due_soon() -> int:
        horizon = loop.time() + 2 * stream_conns.GONE_CHECK
        return sum(1 for h in loop._scheduled if not h.cancelled() and h.when() <= horizon)

    async with daemon_session(settings) as (app, http, sid, token):
        before = due_soon()
        opened = [await open_sse(http, f"/api/sessions/{sid}/events/stream", token) for _ in range(20)]
        assert app[GUARD].open_websockets == 20
        assert due_soon() - before <= 5, (before, due_soon())
        for resp in opened:
            resp.close()
        await eventually(lambda: app[GUARD].open_websockets == 0, message="streams still open")
