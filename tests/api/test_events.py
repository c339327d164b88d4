"""Spec section 3: publish, list (offset and cursor paging, filters) and read events."""

from __future__ import annotations

import asyncio
from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.api.bus_helpers import events, session_with_engine, submit
from tests.conftest import assert_envelope, create_session


async def publish(client: Any, sid: str, event_type: str = "Note", expect: int = 201, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": event_type, **body})
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def page(client: Any, sid: str, **params: Any) -> dict[str, Any]:
    resp = await client.get(f"/api/sessions/{sid}/events", params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_publish_and_get(app_client):
    sid = (await create_session(app_client))["session_id"]
    event = await publish(
        app_client,
        sid,
        "DummyEngineStatusUpdate",
        data={"status": "processing"},
        metadata={"source": "engine", "priority": "normal"},
    )
    assert set(event) == {
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
    assert event["session_id"] == sid and event["source"] == "engine"
    assert event["data"] == {"status": "processing"} and event["timestamp"].endswith("Z")
    plain = await publish(app_client, sid, "Note", data={"n": 1})
    assert plain["source"] == "api" and plain["seq"] > event["seq"]
    # "bus" is the daemon's own source; a publisher cannot claim it.
    assert (await publish(app_client, sid, "Note", metadata={"source": "bus"}))["source"] == "api"

    resp = await app_client.get(f"/api/sessions/{sid}/events/{event['event_id']}")
    assert resp.status == 200 and await resp.json() == event
    resp = await app_client.get(f"/api/sessions/{sid}/events/not-an-event")
    assert resp.status == 404
    assert_envelope(await resp.json(), "EVENT_NOT_FOUND")
    # An event is only found in its own session.
    other = (await create_session(app_client))["session_id"]
    resp = await app_client.get(f"/api/sessions/{other}/events/{event['event_id']}")
    assert_envelope(await resp.json(), "EVENT_NOT_FOUND")


async def test_publish_errors(app_client):
    resp = await app_client.post("/api/sessions/nope/events", json={"event_type": "X"})
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    sid = (await create_session(app_client))["session_id"]
    for body, field in (
        ({}, "event_type"),
        ({"event_type": ""}, "event_type"),
        ({"event_type": "X", "data": []}, "data"),
        ({"event_type": "X", "extra": 1}, "extra"),
    ):
        resp = await app_client.post(f"/api/sessions/{sid}/events", json=body)
        assert resp.status == 422
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field
    await app_client.delete(f"/api/sessions/{sid}")
    resp = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "X"})
    assert resp.status == 409
    assert_envelope(await resp.json(), "SESSION_CLOSED")
    # History of a closed session stays readable.
    assert (await page(app_client, sid))["total"] == 2


async def test_offset_paging(app_client):
    sid = (await create_session(app_client))["session_id"]
    published = [await publish(app_client, sid, "Tick", data={"i": i}) for i in range(7)]
    first = await page(app_client, sid, event_type="Tick", limit=3, offset=0)
    assert first["total"] == 7 and first["limit"] == 3 and first["offset"] == 0
    seen = []
    for offset in (0, 3, 6):
        body = await page(app_client, sid, event_type="Tick", limit=3, offset=offset)
        seen += [e["data"]["i"] for e in body["events"]]
    assert seen == list(range(7))
    last = await page(app_client, sid, event_type="Tick", limit=3, offset=6)
    assert last["next_after"] == published[-1]["seq"]


async def test_cursor_paging_misses_nothing_while_the_log_grows(app_client):
    sid = (await create_session(app_client))["session_id"]
    for i in range(5):
        await publish(app_client, sid, "Tick", data={"i": i})
    seen: list[int] = []
    after = None
    for round_ in range(10):
        params: dict[str, Any] = {"event_type": "Tick", "limit": 2}
        if after is not None:
            params["after"] = after
        body = await page(app_client, sid, **params)
        seen += [e["data"]["i"] for e in body["events"]]
        after = body["next_after"]
        if round_ == 1:  # the log grows between pages
            await publish(app_client, sid, "Tick", data={"i": 5})
        if not body["events"]:
            break
    assert seen == list(range(6))
    # An empty page hands the cursor back, so a poller keeps its place.
    assert (await page(app_client, sid, after=after, event_type="Tick"))["next_after"] == after


async def test_filters(app_client):
    sid, _ = await session_with_engine(app_client)
    await submit(app_client, sid, "x", wait=30)
    a = await publish(app_client, sid, "DummyEngineStatusUpdate", data={"by": "api"})
    types = [e["event_type"] for e in await events(app_client, sid)]
    assert types[:2] == ["SessionStarted", "EngineCreated"]

    exact = await page(app_client, sid, event_type="DummyEngineStatusUpdate")
    assert exact["total"] == 3
    prefix = await page(app_client, sid, event_type="Dummy*")
    assert [e["event_type"] for e in prefix["events"]] == ["DummyEngineStatusUpdate"] * 3
    command = await page(app_client, sid, event_type="Command*")
    assert [e["event_type"] for e in command["events"]] == ["CommandStarted", "CommandResult"]
    assert (await page(app_client, sid, event_type="*"))["total"] == len(types)

    assert {e["source"] for e in (await page(app_client, sid, source="engine"))["events"]} == {"engine"}
    assert [e["event_id"] for e in (await page(app_client, sid, source="api"))["events"]] == [a["event_id"]]
    assert (await page(app_client, sid, source="bus"))["total"] == 4

    since = await page(app_client, sid, since=a["timestamp"])
    assert [e["event_id"] for e in since["events"]] == [a["event_id"]]
    until = await page(app_client, sid, until=a["timestamp"])
    assert until["total"] == len(types) - 1
    both = await page(app_client, sid, since=a["timestamp"], event_type="Dummy*", source="api")
    assert both["total"] == 1

    for params, field in (
        ({"after": "x"}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"source": "mars"}, "source"),
        ({"limit": 0}, "limit"),
        # Types are free text here (tests/api/test_handlers.py lists some user code published):
        # only one over 128 characters and a "*" before the end are refused (empty: no filter).
        ({"event_type": "x" * 129}, "event_type"),
        ({"event_type": "a*b"}, "event_type"),
    ):
        resp = await app_client.get(f"/api/sessions/{sid}/events", params=params)
        assert resp.status == 422, params
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == field
    assert (await page(app_client, sid, event_type="no such type"))["total"] == 0
    assert (await page(app_client, sid, event_type=""))["total"] == len(types)
    assert (await page(app_client, sid, event_type="x" * 128 + "*"))["total"] == 0
    resp = await app_client.get("/api/sessions/nope/events")
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")


async def test_seq_is_global_and_strictly_increasing(app_client):
    a = (await create_session(app_client))["session_id"]
    b = (await create_session(app_client))["session_id"]
    seqs = []
    for i in range(6):
        seqs.append((await publish(app_client, a if i % 2 else b, "Tick"))["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_event_idempotency(app_client):
    sid = (await create_session(app_client))["session_id"]
    headers = {"Idempotency-Key": "e1"}
    r1 = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "X"}, headers=headers)
    r2 = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "X"}, headers=headers)
    assert (await r1.json())["event_id"] == (await r2.json())["event_id"]
    assert r2.headers["Idempotent-Replayed"] == "true"
    assert (await page(app_client, sid, event_type="X"))["total"] == 1


async def test_a_page_of_large_events_is_sent_whole_part_by_part(app_client, monkeypatch):
    """A page was built whole in memory, whatever its events' size: a session token that had
    written a thousand 1 MB events made the daemon hold about 3.4 GB for each GET of them.
    Past PAGE_BYTES a page is read and sent part by part (chunked), and is the same page: cut
    short, a client paging with offset += limit would skip what was cut."""
    monkeypatch.setattr("llmgine_daemon.bus.pages.PAGE_BYTES", 16_000)
    sid = (await (await app_client.post("/api/sessions", json={})).json())["session_id"]
    blob = "x" * 5000
    for i in range(25):
        for event_type in ("Big", "Other"):  # the filter holds in every part
            resp = await app_client.post(
                f"/api/sessions/{sid}/events", json={"event_type": event_type, "data": {"i": i, "b": blob}}
            )
            assert resp.status == 201, await resp.text()
    resp = await app_client.get(f"/api/sessions/{sid}/events?event_type=Big&limit=20&offset=2")
    assert resp.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in resp.headers
    page = await resp.json()
    assert [e["data"]["i"] for e in page["events"]] == list(range(2, 22))
    assert {e["event_type"] for e in page["events"]} == {"Big"}
    assert {k: page[k] for k in ("total", "limit", "offset")} == {"total": 25, "limit": 20, "offset": 2}
    assert page["next_after"] == page["events"][-1]["seq"]
    # Paging on by offset or by next_after, as a short page would.
    rest = await (await app_client.get(f"/api/sessions/{sid}/events?event_type=Big&limit=20&offset=22")).json()
    assert [e["data"]["i"] for e in rest["events"]] == [22, 23, 24]
    after = await (
        await app_client.get(f"/api/sessions/{sid}/events?event_type=Big&limit=20&after={page['next_after']}")
    ).json()
    assert [e["data"]["i"] for e in after["events"]] == [22, 23, 24] and after["next_after"] == rest["next_after"]
    # A page within PAGE_BYTES is one answer, as before.
    resp = await app_client.get(f"/api/sessions/{sid}/events?event_type=Big&limit=2")
    assert "Content-Length" in resp.headers and len((await resp.json())["events"]) == 2


async def test_a_part_that_fails_mid_page_ends_the_connection_not_a_second_answer(app_client, monkeypatch):
    """A long page's head (200) and first part are sent before its next part is read. When
    that read failed, the error's answer (its own status line and headers) was written into
    the chunked body of the 200; a client read 'HTTP/1.1 500 ...' as a chunk size. Now the
    connection ends without the body's last chunk: the client sees the page cut short."""
    monkeypatch.setattr("llmgine_daemon.bus.pages.PAGE_BYTES", 16_000)
    sid = (await create_session(app_client))["session_id"]
    for _ in range(8):
        resp = await app_client.post(
            f"/api/sessions/{sid}/events", json={"event_type": "Big", "data": {"b": "x" * 5000}}
        )
        assert resp.status == 201, await resp.text()
    # A row the second part reads is damaged (not JSON): that part's read fails.
    await app_client.app[BUS].store.write(
        lambda c: c.execute(
            "UPDATE events SET data = '{' WHERE seq = (SELECT MAX(seq) FROM events WHERE session_id = ?)", (sid,)
        )
    )
    reader, writer = await asyncio.open_connection(app_client.server.host, app_client.server.port)
    key = app_client.session.headers["Authorization"]
    writer.write(
        f"GET /api/sessions/{sid}/events?limit=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Connection: close\r\nAuthorization: {key}\r\n\r\n".encode()
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=60)  # until the connection ends
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1 ") == 1, raw[-300:]
    assert not raw.endswith(b"\r\n0\r\n\r\n")  # no last chunk: not a whole (and wrong) page
    # The daemon goes on serving.
    assert (await app_client.get(f"/api/sessions/{sid}/events?limit=2")).status == 200
