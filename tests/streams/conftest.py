"""Helpers for the stream tests: publish through the bus's own primitives, read streams.

Events are published the way the bus does it (``insert_event`` inside ``Store.write``, then
``EventLog.notify`` after the commit), so these tests need nothing from the events API.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from llmgine_daemon.api.keys import BUS, STREAMS
from llmgine_daemon.app import create_app
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.streams import StreamHub
from llmgine_daemon.protocol import Event

from tests.backends import database_url, pytest_generate_tests  # noqa: F401 - both backends

WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def hub_of(app: web.Application) -> StreamHub:
    return app[STREAMS]


async def publish(
    app: web.Application,
    session_id: str | None,
    event_type: str = "TestEvent",
    count: int = 1,
    *,
    data: dict[str, Any] | None = None,
    source: str = "api",
    notify: bool = True,
) -> list[Event]:
    """``count`` events in one transaction, announced after the commit."""
    bus = app[BUS]

    def write(conn: Any) -> list[Event]:
        return [
            insert_event(conn, session_id, event_type, {"i": i, **(data or {})}, source=source) for i in range(count)
        ]

    events = await bus.store.write(write)
    if notify:
        bus.events.notify(events)
    return events


async def ws_read(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def ws_events(ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` events, skipping control messages."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        msg = await ws_read(ws, timeout)
        if msg["type"] == "event":
            out.append(msg["event"])
    return out


async def sse_frames(resp: aiohttp.ClientResponse):
    """Yield SSE frames as dicts of their fields; a frame of comments alone (the daemon's
    ``: ping`` heartbeat, sent when a stream has been quiet for a while: a slow run) is skipped."""
    fields: dict[str, str] = {}
    while True:
        line = await resp.content.readline()
        if not line:
            return
        text = line.decode().rstrip("\n")
        if text == "":
            if set(fields) - {":"}:
                yield fields
            fields = {}
            continue
        name, _, value = text.partition(":")
        fields[name or ":"] = value[1:] if value.startswith(" ") else value


@pytest.fixture
async def unix_app(home, make_settings):
    """(app, http session) for the real app on a Unix socket; small socket buffers make
    back-pressure (a client that stops reading) show up after a few hundred KB."""
    app = create_app(make_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(home / "u.sock")
    await web.UnixSite(runner, path).start()
    http = aiohttp.ClientSession(base_url="http://llmgine", connector=aiohttp.UnixConnector(path=path))
    try:
        yield app, http
    finally:
        await http.close()
        await runner.cleanup()
