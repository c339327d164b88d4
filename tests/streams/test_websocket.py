"""WebSocket streams: hello, events, filters, resume, client messages, closing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from llmgine_daemon.api.keys import STREAMS
from llmgine_daemon.app import create_app

from tests.conftest import assert_documented, assert_envelope, create_session
from tests.streams.conftest import WS_HEADERS, publish, ws_events, ws_read


async def test_session_stream_hello_then_live_events(app_client):
    sid = (await create_session(app_client))["session_id"]
    app = app_client.app
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        hello = await ws_read(ws)
        assert hello["type"] == "hello"
        assert hello["last_seq"] == 1 and hello["since"] == 1  # SessionStarted is seq 1
        assert hello["session_id"] == sid and hello["replay"] is False
        published = await publish(app, sid, "Ping", 3, data={"x": 1})
        other = (await create_session(app_client))["session_id"]
        await publish(app, other, "Ping")  # another session's: not on this stream
        tail = await publish(app, sid, "Pong")
        got = await ws_events(ws, 4)
    assert [e["seq"] for e in got] == [e.seq for e in published + tail]
    first = got[0]
    assert first["event_type"] == "Ping" and first["data"] == {"i": 0, "x": 1}
    assert first["session_id"] == sid and first["source"] == "api"
    assert set(first) == {
        "event_id",
        "seq",
        "session_id",
        "event_type",
        "data",
        "metadata",
        "timestamp",
        "source",
        "trace_id",
    }


async def test_global_stream_sees_every_session(app_client):
    async with app_client.ws_connect("/api/events/stream") as ws:
        assert (await ws_read(ws))["type"] == "hello"
        a = (await create_session(app_client))["session_id"]
        b = (await create_session(app_client))["session_id"]
        got = await ws_events(ws, 2)
    assert [(e["event_type"], e["session_id"]) for e in got] == [("SessionStarted", a), ("SessionStarted", b)]


async def test_since_replays_then_switches_to_live(app_client):
    sid = (await create_session(app_client))["session_id"]
    app = app_client.app
    await publish(app, sid, "Old", 10)  # seqs 2..11
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream", params={"since": "5"}) as ws:
        hello = await ws_read(ws)
        assert hello["since"] == 5 and hello["last_seq"] == 11 and hello["replay"] is True
        replayed = [await ws_read(ws) for _ in range(6)]
        assert [m["event"]["seq"] for m in replayed] == list(range(6, 12))
        assert await ws_read(ws) == {"type": "live", "seq": 11}
        await publish(app, sid, "New", 2)
        assert [e["seq"] for e in await ws_events(ws, 2)] == [12, 13]


async def test_since_zero_and_since_time(app_client):
    sid = (await create_session(app_client))["session_id"]
    await publish(app_client.app, sid, "E", 2)
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream", params={"since": "0"}) as ws:
        assert [e["seq"] for e in await ws_events(ws, 3)] == [1, 2, 3]
    async with app_client.ws_connect(
        f"/api/sessions/{sid}/events/stream", params={"since": "2000-01-01T00:00:00Z"}
    ) as ws:
        assert [e["event_type"] for e in await ws_events(ws, 3)] == ["SessionStarted", "E", "E"]


async def test_filters_exact_prefix_and_source(app_client):
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(
        "/api/events/stream",
        params=[("event_type", "CommandStarted"), ("event_type", "Engine*"), ("source", "engine")],
    ) as ws:
        hello = await ws_read(ws)
        assert hello["event_types"] == ["CommandStarted", "Engine*"]
        assert hello["sources"] == ["engine"]
        await publish(app, sid, "CommandStarted", source="bus")  # wrong source
        await publish(app, sid, "EngineStatus", source="engine")
        await publish(app, sid, "engineLower", source="engine")  # prefixes are case-sensitive
        await publish(app, sid, "CommandStarted", source="engine")
        await publish(app, sid, "Other", source="engine")
        await publish(app, sid, "EngineDone", source="engine")
        got = await ws_events(ws, 3)
    assert [e["event_type"] for e in got] == ["EngineStatus", "CommandStarted", "EngineDone"]


async def test_filters_apply_to_replay_too(app_client):
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    await publish(app, sid, "A", 3)
    await publish(app, sid, "B_x", 2)  # '_' is not a wildcard in a prefix
    await publish(app, sid, "Bxx", 2)
    async with app_client.ws_connect(
        f"/api/sessions/{sid}/events/stream", params={"since": "0", "event_type": "B_*"}
    ) as ws:
        await ws_read(ws)
        got = [await ws_read(ws) for _ in range(3)]
    assert [m.get("event", {}).get("event_type") for m in got] == ["B_x", "B_x", None]
    assert got[2]["type"] == "live"


async def test_subscribe_message_changes_filter(app_client):
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream?event_type=A") as ws:
        await ws_read(ws)
        a = await publish(app, sid, "A")
        assert (await ws_events(ws, 1))[0]["seq"] == a[0].seq
        await ws.send_json({"type": "subscribe", "event_types": ["B*"]})
        ack = await ws_read(ws)
        assert ack["type"] == "subscribed" and ack["event_types"] == ["B*"]
        assert ack["after_seq"] == a[0].seq
        # The new filter replays from the cursor (nothing yet), then says it is live. Published
        # before this, "Bee" could come in the replay with "live" after it, in place of the
        # error awaited below.
        assert (await ws_read(ws))["type"] == "live"
        await publish(app, sid, "A")
        b = await publish(app, sid, "Bee")
        got = await ws_events(ws, 1)
        assert got[0]["seq"] == b[0].seq
        # Bad messages are answered, not fatal.
        await ws.send_str("{not json")
        assert (await ws_read(ws))["error"]["code"] == "VALIDATION_ERROR"
        await ws.send_json({"type": "subscribe", "event_types": ["a*b"]})
        err = await ws_read(ws)
        assert err["type"] == "error" and err["error"]["details"]["field"] == "event_type"
        await ws.send_json({"type": "dance"})
        assert (await ws_read(ws))["type"] == "error"
        await ws.send_json({"type": "ping"})
        assert await ws_read(ws) == {"type": "pong"}


@pytest.mark.parametrize("message", [b'{"type":"ping"}', b'{"type":"subscribe","event_types":["A"]}'])
async def test_a_client_that_sends_without_reading_is_dropped(app_client, message):
    """Each ping, subscribe (or bad message) is answered on the stream; a client that sends them
    and never reads had the answers pile up in the daemon's memory (350 MB in 20 s on one
    WebSocket). Past MAX_NOTICES unsent answers the connection is dropped, and the daemon
    streams on."""
    import os

    from llmgine_daemon.bus.streams import MAX_NOTICES

    from tests.streams.test_masking import open_stream

    sid = (await create_session(app_client))["session_id"]
    reader, writer = await open_stream(app_client, rcvbuf=4096, sid=sid)
    mask = os.urandom(4)
    frame = bytes((0x81, 0x80 | len(message))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    hub = app_client.app[STREAMS]
    most, dropped = 0, False
    for _ in range(1000):  # up to a million messages, never reading an answer
        try:
            writer.write(frame * 1000)
            await asyncio.wait_for(writer.drain(), 30)
        except ConnectionError:
            dropped = True
            break
        most = max([most, *(len(s._notices) for s in hub._by_session.get(sid, ()))])
    writer.close()
    assert dropped, f"still open after a million unread answers ({most} waiting)"
    assert most <= MAX_NOTICES
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        assert (await ws_read(ws))["type"] == "hello"
        await ws.send_json({"type": "ping"})
        assert await ws_read(ws) == {"type": "pong"}


async def test_client_messages_sent_at_once_are_answered_in_order(app_client):
    """A page sends its messages in one go (ws.send, ws.send...): the daemon reads them
    together. Each subscribe amends the one before it, even one not yet applied (an omitted
    field is left as the previous subscribe set it), and every message is answered, in order."""
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        await ws_read(ws)
        # Written before the server runs (one event loop): it reads all four at once.
        await asyncio.gather(
            ws.send_json({"type": "ping"}),
            ws.send_json({"type": "subscribe", "event_types": ["Ping"]}),
            ws.send_json({"type": "subscribe", "sources": ["api"]}),
            ws.send_json({"type": "ping"}),
        )
        got = [await ws_read(ws) for _ in range(4)]
        assert [m["type"] for m in got] == ["pong", "subscribed", "subscribed", "pong"], got
        assert (got[1]["event_types"], got[1]["sources"]) == (["Ping"], [])
        assert (got[2]["event_types"], got[2]["sources"]) == (["Ping"], ["api"])
        await publish(app, sid, "Other")
        ping = await publish(app, sid, "Ping")
        assert [e["seq"] for e in await ws_events(ws, 1)] == [ping[0].seq]


async def test_unknown_session_refuses_handshake_with_envelope(app_client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await app_client.ws_connect("/api/sessions/nope/events/stream")
    assert info.value.status == 404
    resp = await app_client.get("/api/sessions/nope/events/stream", headers=WS_HEADERS)
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")


@pytest.mark.parametrize(
    "query, field",
    [("since=-1", "since"), ("since=yesterday", "since"), ("since=99", "since"), ("event_type=a*b", "event_type")],
)
async def test_bad_parameters_are_422(app_client, query, field):
    resp = await app_client.get(f"/api/events/stream?{query}", headers=WS_HEADERS)
    assert resp.status == 422
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field


async def test_plain_get_without_upgrade_or_sse_is_406(app_client):
    resp = await app_client.get("/api/events/stream", headers={"Accept": "application/json"})
    assert resp.status == 406
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    for path in ("/api/events/stream", "/api/sessions/{session_id}/events/stream"):  # and says so
        await assert_documented(app_client, "GET", path, 406, "VALIDATION_ERROR")


async def test_session_deleted_sends_session_ended_then_1000(app_client):
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    # The filter excludes SessionEnded, yet a session stream always gets it.
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream?event_type=X") as ws:
        await ws_read(ws)
        await publish(app, sid, "X")
        assert (await app_client.delete(f"/api/sessions/{sid}")).status == 200
        got = await ws_events(ws, 2)
        assert [e["event_type"] for e in got] == ["X", "SessionEnded"]
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000


@pytest.mark.parametrize("purge", [False, True], ids=["deleted", "purged"])
async def test_a_session_tokens_stream_gets_its_session_ended_then_1000(app_client, purge):
    """Opened with the session's own token, which dies with the session: the token's end
    closed the WebSocket with 1008 before its SessionEnded went out (the close overtook it)."""
    session = await create_session(app_client)
    sid, token = session["session_id"], session["session_token"]
    path = f"/api/sessions/{sid}/events/stream"
    async with app_client.ws_connect(path, headers={"X-Session-Token": token}) as ws:
        await ws_read(ws)
        await publish(app_client.app, sid, "X")
        resp = await app_client.delete(f"/api/sessions/{sid}" + ("?purge=true" if purge else ""))
        assert resp.status in (200, 204)
        got = await ws_events(ws, 2)
        assert [e["event_type"] for e in got] == ["X", "SessionEnded"]
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000, msg


async def test_session_purged_still_ends_with_session_ended(app_client):
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        await ws_read(ws)
        resp = await app_client.delete(f"/api/sessions/{sid}", params={"purge": "true"})
        assert resp.status == 204
        got = await ws_events(ws, 1)
        assert got[0]["event_type"] == "SessionEnded"
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000


async def test_stream_of_ended_session_replays_and_closes(app_client):
    app = app_client.app
    sid = (await create_session(app_client))["session_id"]
    await publish(app, sid, "X", 2)
    await app_client.delete(f"/api/sessions/{sid}")
    # No since: just how it ended.
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        hello = await ws_read(ws)
        assert hello["replay"] is True
        assert [e["event_type"] for e in await ws_events(ws, 1)] == ["SessionEnded"]
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
    # since=0: the whole history, then the close.
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream?since=0") as ws:
        got = await ws_events(ws, 4)
        assert [e["event_type"] for e in got] == ["SessionStarted", "X", "X", "SessionEnded"]
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000


async def test_shutdown_closes_streams_with_1001(make_settings, home):
    app = create_app(make_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(home / "s.sock")
    await web.UnixSite(runner, path).start()
    conn = aiohttp.UnixConnector(path=path)
    async with aiohttp.ClientSession(connector=conn) as http:
        ws = await http.ws_connect("http://llmgine/api/events/stream")
        sse = await http.get("http://llmgine/api/events/stream", headers={"Accept": "text/event-stream"})
        assert (await ws_read(ws))["type"] == "hello"
        # A real client is always reading; the close handshake needs its reply.
        receiving = asyncio.create_task(ws.receive(timeout=10))
        await runner.cleanup()
        msg = await receiving
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        assert ws.close_code == 1001  # a clean close handshake, not a dropped connection
        body = await sse.content.read()  # the SSE response ends (it does not hang shutdown)
        assert b"event: stream.hello" in body
        assert b'event: stream.end\ndata: {"type":"end","code":1001' in body


async def test_events_committed_without_a_notification_still_arrive(app_client):
    """A publisher that forgets EventLog.notify: the hub's poll finds the event in the store."""
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        await ws_read(ws)
        silent = await publish(app_client.app, sid, "Silent", notify=False)
        loud = await publish(app_client.app, sid, "Loud")  # skips a seq: filled from the store
        got = await ws_events(ws, 2)
        assert [e["seq"] for e in got] == [silent[0].seq, loud[0].seq]
        last = await publish(app_client.app, sid, "Last", notify=False)  # nothing after it
        assert (await ws_events(ws, 1, timeout=10))[0]["seq"] == last[0].seq


async def test_a_message_over_the_limit_closes_1009_saying_why(app_client):
    """aiohttp closed a too-big client message with 1009 and an empty reason: a browser's
    CloseEvent said nothing of what went wrong. The reason now names the limit."""
    sid = (await create_session(app_client))["session_id"]
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        assert (await ws_read(ws))["type"] == "hello"
        await ws.send_str('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
        msg = await ws.receive(timeout=10)
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
    assert msg.extra == f"message too big: at most {64 * 1024} bytes"
