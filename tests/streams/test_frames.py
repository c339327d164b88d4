"""The stream messages are protocol/streams.py's one tagged union: everything the daemon sends
on a WebSocket or as an SSE ``stream.*`` message decodes as a ``ServerFrame``, and what a
client sends is a ``ClientFrame``."""

from __future__ import annotations

import msgspec
from llmgine_daemon.protocol import (
    ClientFrame,
    End,
    EventFrame,
    Hello,
    Live,
    Pong,
    ServerFrame,
    StreamError,
    Subscribed,
)

from tests.conftest import create_session
from tests.streams.conftest import publish


async def test_every_websocket_message_is_a_server_frame(app_client):
    sid = (await create_session(app_client))["session_id"]
    app = app_client.app
    decode = msgspec.json.Decoder(ServerFrame).decode
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream", params={"since": "0"}) as ws:
        hello = decode((await ws.receive(timeout=10)).data)
        assert isinstance(hello, Hello) and hello.type == "hello" and hello.replay
        started = decode((await ws.receive(timeout=10)).data)
        assert isinstance(started, EventFrame) and started.event.event_type == "SessionStarted"
        assert isinstance(decode((await ws.receive(timeout=10)).data), Live)
        await ws.send_bytes(b'{"type": "ping"}')
        refused = decode((await ws.receive(timeout=10)).data)
        assert isinstance(refused, StreamError) and refused.error.code == "VALIDATION_ERROR"  # binary
        await ws.send_str(msgspec.json.encode(msgspec.convert({"type": "ping"}, ClientFrame)).decode())
        assert isinstance(decode((await ws.receive(timeout=10)).data), Pong)
        await ws.send_str('{"type": "subscribe", "event_types": ["A*"]}')
        subscribed = decode((await ws.receive(timeout=10)).data)
        assert isinstance(subscribed, Subscribed) and subscribed.event_types == ["A*"]
        assert isinstance(decode((await ws.receive(timeout=10)).data), Live)  # replayed from there
        await ws.send_str('{"type": "dance"}')
        unknown = decode((await ws.receive(timeout=10)).data)
        assert isinstance(unknown, StreamError) and unknown.error.details["field"] == "type"
        event = (await publish(app, sid, "Abc"))[0]
        # The event frame is, byte for byte, EventFrame's encoding.
        raw = (await ws.receive(timeout=10)).data
        assert raw.encode() == msgspec.json.encode(EventFrame(event=event))


async def test_every_sse_control_message_is_a_server_frame(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.get(
        f"/api/sessions/{sid}/events/stream", params={"since": "0"}, headers={"Accept": "text/event-stream"}
    )
    await app_client.delete(f"/api/sessions/{sid}")
    text = (await resp.read()).decode()
    frames = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event", "").startswith("stream."):
            frame = msgspec.json.decode(fields["data"], type=ServerFrame)
            assert fields["event"] == f"stream.{frame.type}"
            frames.append(frame)
    assert isinstance(frames[0], Hello)
    assert isinstance(frames[-1], End) and frames[-1].code == 1000
