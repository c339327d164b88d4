"""Clients that stop reading: their streams are dropped (docs/streams.md, "Slow consumers"),
not held for ever; one that reads slowly is not; and they do not hold up the shutdown.

The stalled clients are raw connections on the daemon's Unix socket that send a handshake and
then read nothing (an asyncio reader with a tiny limit stops taking bytes from the socket),
as a frozen browser tab or a client stuck in a debugger does.
"""

from __future__ import annotations

import asyncio
import base64
import os

import aiohttp
import pytest
from aiohttp import web
from llmgine_daemon.api import stream_conns
from llmgine_daemon.api.guard import GUARD
from llmgine_daemon.app import create_app

from tests.conftest import create_session
from tests.eventually import eventually
from tests.streams.conftest import hub_of, publish, ws_read

BLOB = "x" * 50_000


async def _stalled(sock: str, path: str, websocket: bool) -> asyncio.StreamWriter:
    """A connection that opened a stream (WebSocket or SSE), then reads nothing more."""
    reader, writer = await asyncio.open_unix_connection(sock, limit=1024)
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        head = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    else:
        head = "Accept: text/event-stream\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: llmgine\r\n{head}\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    assert status.split()[1] == (b"101" if websocket else b"200"), status
    return writer


async def _flood(app: web.Application, sid: str, megabytes: int) -> None:
    for _ in range(megabytes):
        await publish(app, sid, "Big", 20, data={"blob": BLOB})


@pytest.fixture
async def unix_daemon(home, make_settings):
    """(app, runner, socket path) of the real app on a Unix socket; the test ends the runner."""
    app = create_app(make_settings(LLMGINE_RATE_LIMIT_WEBSOCKET="0"))
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(home / "s.sock")
    await web.UnixSite(runner, path).start()
    http = aiohttp.ClientSession(base_url="http://llmgine", connector=aiohttp.UnixConnector(path=path))
    try:
        yield app, runner, path, http
    finally:
        await http.close()
        if runner.server is not None:
            await runner.cleanup()


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "sse"])
async def test_a_client_that_reads_nothing_is_dropped(unix_daemon, monkeypatch, websocket):
    """Its sender waited in a write for ever: the stream (its slot, its backlog) was never
    freed, whatever the heartbeat, for as long as the client kept the connection open."""
    monkeypatch.setattr(stream_conns, "STALL", 1.0)
    app, _runner, sock, http = unix_daemon
    sid = (await create_session(http))["session_id"]
    writer = await _stalled(sock, f"/api/sessions/{sid}/events/stream", websocket)
    hub = hub_of(app)
    assert len(hub.subscriptions()) == 1
    await _flood(app, sid, 10)  # far more than the socket buffers hold
    await eventually(lambda: not hub.subscriptions(), message="the stalled client's stream is still open")
    await eventually(lambda: app[GUARD].open_websockets == 0, message="its slot is still held")
    writer.close()


async def test_a_client_that_reads_slowly_is_not_dropped(unix_daemon, monkeypatch):
    """The buffer shrinks while it reads: progress, however long one write waits for it."""
    monkeypatch.setattr(stream_conns, "STALL", 1.0)
    app, _runner, _sock, http = unix_daemon
    sid = (await create_session(http))["session_id"]
    ws = await http.ws_connect(f"/api/sessions/{sid}/events/stream", max_msg_size=0)
    assert (await ws_read(ws))["type"] == "hello"
    await _flood(app, sid, 6)  # one batch of ~6 MB: more than a second to read, slowly
    seen = 0
    while seen < 120:
        msg = await ws_read(ws, 30)
        if msg["type"] == "event":
            seen += 1
            await asyncio.sleep(0.02)  # ~2.5 MB/s
    assert len(hub_of(app).subscriptions()) == 1
    await ws.close()


async def test_a_client_that_reads_nothing_does_not_hold_up_the_shutdown(unix_daemon):
    """The close frame (stream.end) waited behind the unread bytes: the shutdown waited for
    that client for as long as it kept its connection (the stall bound did not apply yet)."""
    app, runner, sock, http = unix_daemon
    sid = (await create_session(http))["session_id"]
    writers = [await _stalled(sock, f"/api/sessions/{sid}/events/stream", ws) for ws in (True, False)]
    await _flood(app, sid, 10)
    await asyncio.wait_for(runner.cleanup(), 30)  # a liveness bound: it hung for ever
    assert not hub_of(app).subscriptions()
    for writer in writers:
        writer.close()
