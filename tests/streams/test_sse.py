"""Server-Sent Events on the same paths: framing, Last-Event-ID, closing; the browser snippet."""

from __future__ import annotations

import json

import aiohttp
import pytest
from llmgine_daemon.api.streams import SUBPROTOCOL

from tests.conftest import create_session
from tests.streams.conftest import publish, sse_frames, ws_events, ws_read

SSE = {"Accept": "text/event-stream"}


async def _frames(resp, count):
    out = []
    async for frame in sse_frames(resp):
        out.append(frame)
        if len(out) == count:
            break
    return out


async def test_sse_framing_hello_and_events(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.get(f"/api/sessions/{sid}/events/stream", headers=SSE)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    published = await publish(app_client.app, sid, "Tick", 2)
    hello, first, second = await _frames(resp, 3)
    assert hello["retry"] == "2000" and hello["event"] == "stream.hello"
    assert hello["id"] == "1"  # the start cursor: a reconnect before any event resumes there
    assert json.loads(hello["data"])["last_seq"] == 1
    assert first["id"] == str(published[0].seq) and first["event"] == "Tick"
    event = json.loads(first["data"])
    assert event["seq"] == published[0].seq and event["data"] == {"i": 0}
    assert second["id"] == str(published[1].seq)
    resp.close()


async def test_sse_last_event_id_resumes_and_beats_since(app_client):
    sid = (await create_session(app_client))["session_id"]
    await publish(app_client.app, sid, "E", 5)  # seqs 2..6
    resp = await app_client.get(
        f"/api/sessions/{sid}/events/stream?since=0",
        headers={**SSE, "Last-Event-ID": "4"},
    )
    frames = await _frames(resp, 4)
    assert [f.get("id") for f in frames[1:3]] == ["5", "6"]
    assert frames[3]["event"] == "stream.live" and json.loads(frames[3]["data"])["seq"] == 6
    resp.close()
    bad = await app_client.get("/api/events/stream", headers={**SSE, "Last-Event-ID": "x"})
    assert bad.status == 422
    assert (await bad.json())["error"]["details"]["field"] == "Last-Event-ID"
    # event-source-polyfill, the EventSource that sends headers, sends the last id as the query
    # parameter lastEventId (replacing its own, keeping the rest of the URL): it is honoured the
    # same way, else its reconnections would start at `now` and lose what happened meanwhile.
    resp = await app_client.get(f"/api/sessions/{sid}/events/stream?lastEventId=5", headers=SSE)
    frames = await _frames(resp, 3)
    assert json.loads(frames[0]["data"])["since"] == 5 and frames[0]["id"] == "5"
    assert [f.get("id") for f in frames[1:2]] == ["6"] and frames[2]["event"] == "stream.live"
    resp.close()
    bad = await app_client.get("/api/events/stream?lastEventId=x", headers=SSE)
    assert bad.status == 422
    assert (await bad.json())["error"]["details"]["field"] == "lastEventId"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("lastEventId=%C2%B2", "lastEventId"),  # "²": str.isdigit() says yes, int() refuses
        ("lastEventId=" + "9" * 5000, "lastEventId"),  # over int()'s 4300 digits
        ("since=%C2%B2", "since"),
        ("since=" + "9" * 5000, "since"),
    ],
    ids=["lastEventId-superscript", "lastEventId-5000-digits", "since-superscript", "since-5000-digits"],
)
async def test_a_seq_that_is_no_ascii_integer_is_refused_not_a_500(app_client, query, field):
    """?lastEventId= (and since) are checked as Last-Event-ID is: a seq is ASCII digits. A
    superscript digit or five thousand digits passed str.isdigit() and failed int(): 500."""
    resp = await app_client.get(f"/api/events/stream?{query}", headers=SSE)
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["details"]["field"] == field


@pytest.mark.parametrize("where", ["Last-Event-ID", "lastEventId", "since"])
async def test_a_seq_beyond_the_log_names_where_it_came_from(app_client, where):
    """A cursor from another database (the daemon's was replaced) is refused naming what the
    client sent: an EventSource's Last-Event-ID was reported as ``since``, which it never sent."""
    headers = {**SSE, "Last-Event-ID": "999999"} if where == "Last-Event-ID" else SSE
    query = "" if where == "Last-Event-ID" else f"?{where}=999999"
    resp = await app_client.get(f"/api/events/stream{query}", headers=headers)
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["error"]["details"]
    assert details["field"] == where and details["value"] == 999999, details


async def test_sse_curl_style_accept_any_and_filters(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.get(
        "/api/events/stream",
        params={"event_type": "Keep*", "since": "0"},
        headers={"Accept": "*/*"},
    )
    assert resp.status == 200
    await publish(app_client.app, sid, "Drop")
    await publish(app_client.app, sid, "KeepMe")
    frames = await _frames(resp, 3)
    # KeepMe comes after stream.live, or before it when it committed while the replay from
    # since=0 was still being read (a slower store: PostgreSQL); Drop never comes.
    names = [f["event"] for f in frames]
    assert names[0] == "stream.hello" and sorted(names[1:]) == ["KeepMe", "stream.live"], names
    resp.close()


async def test_sse_session_deleted_ends_stream_after_session_ended(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.get(f"/api/sessions/{sid}/events/stream", headers=SSE)
    await app_client.delete(f"/api/sessions/{sid}")
    frames = [f async for f in sse_frames(resp)]  # ends: the server finished the response
    assert [f["event"] for f in frames] == ["stream.hello", "SessionEnded", "stream.end"]
    assert json.loads(frames[-1]["data"])["code"] == 1000


async def test_head_of_a_stream_is_its_headers_only(app_client):
    # A HEAD answer has no body: the stream's head, then the next answer on the same
    # kept-alive connection (written, the stream's frames would be read as that answer).
    import asyncio

    sid = (await create_session(app_client))["session_id"]
    reader, writer = await asyncio.open_connection("127.0.0.1", app_client.port)
    auth = app_client.session.headers.get("Authorization", "")
    head = f"Host: 127.0.0.1\r\nAuthorization: {auth}\r\nAccept: text/event-stream\r\n"
    writer.write(
        f"HEAD /api/sessions/{sid}/events/stream HTTP/1.1\r\n{head}\r\n"
        f"GET /api/health HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode()
    )
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first, raw[:300]
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]  # no frame in between: the next answer
    assert b'"status":"healthy"' in rest
    missing = await app_client.head("/api/sessions/01a24c5f-0000-7000-8000-000000000000/events/stream", headers=SSE)
    assert missing.status == 404


async def test_sse_unknown_session_is_404_envelope(app_client):
    resp = await app_client.get("/api/sessions/missing/events/stream", headers=SSE)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "SESSION_NOT_FOUND"


async def test_browser_snippet_over_tcp_with_origin_and_subprotocol(make_client):
    """The spec's snippet: `new WebSocket(url)` + JSON.parse(onmessage), from a page on an
    allowed origin. A browser cannot set headers, so its credential (here the session token)
    travels as `?token=` or as a `llmgine.bearer.<TOKEN>` subprotocol."""
    origin = {"Origin": "http://localhost:3000"}
    # One app (a SQLite database serves one daemon): its client makes the session with the
    # local key, then drops the key and is the browser.
    browser = await make_client(CORS_ORIGINS="http://localhost:3000")
    session = await create_session(browser)
    sid, token = session["session_id"], session["session_token"]
    del browser.session.headers["Authorization"]
    url = f"/api/sessions/{sid}/events/stream"
    # No credential over TCP: the handshake is refused.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.ws_connect(url, headers=origin)
    assert refused.value.status == 401
    async with browser.ws_connect(f"{url}?token={token}", headers=origin) as ws:
        assert ws.protocol is None
        assert (await ws_read(ws))["type"] == "hello"
        await publish(browser.app, sid, "FromBrowser")
        assert (await ws_events(ws, 1))[0]["event_type"] == "FromBrowser"
    # Passing the credential as a subprotocol, the browser offers ours too; we must select it,
    # or the browser drops the connection (tests/e2e/test_browser.py does this in Chromium).
    # The documented llmgine.events.v1, or the older llmgine, whichever the client offers first.
    assert SUBPROTOCOL == "llmgine.events.v1"
    for offered, selected in (
        ((SUBPROTOCOL, f"llmgine.bearer.{token}"), SUBPROTOCOL),
        ((f"llmgine.bearer.{token}", SUBPROTOCOL), SUBPROTOCOL),
        ((f"llmgine.bearer.{token}", "llmgine"), "llmgine"),
        (("llmgine", SUBPROTOCOL, f"llmgine.bearer.{token}"), "llmgine"),
    ):
        async with browser.ws_connect(url, headers=origin, protocols=offered) as ws:
            assert ws.protocol == selected, offered
            assert (await ws_read(ws))["type"] == "hello"
    # A page on another origin is refused even with the token (WebSocket hijacking).
    with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
        await browser.ws_connect(f"{url}?token={token}", headers={"Origin": "http://evil.example"})
    assert hijack.value.status == 403


async def test_sse_and_ws_see_the_same_events(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.get(f"/api/sessions/{sid}/events/stream?since=0", headers=SSE)
    async with app_client.ws_connect(f"/api/sessions/{sid}/events/stream?since=0") as ws:
        await publish(app_client.app, sid, "Both", 3)
        ws_got = [e["seq"] for e in await ws_events(ws, 4)]
    frames = [f for f in await _frames(resp, 6) if not f["event"].startswith("stream.")]
    assert [int(f["id"]) for f in frames] == ws_got == [1, 2, 3, 4]
    resp.close()
