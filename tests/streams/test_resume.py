"""Gap-free resume under concurrent publishing, and slow consumers.

Every subscriber must see every matching seq exactly once, in order, whatever the publishers
do (batches, notifications out of order) and however the subscriber connects, drops and
resumes. The queues are made tiny so the overflow -> replay -> live path runs constantly.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from llmgine_daemon.api.keys import BUS
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.streams import StreamFilter
from llmgine_daemon.protocol import Event

from tests.conftest import create_session
from tests.streams.conftest import hub_of, publish, sse_frames, ws_events, ws_read

PER_PUBLISHER = 800


async def _expected(app, start: int, session_id: str | None) -> list[int]:
    where = "seq > ?" + (" AND session_id = ?" if session_id else "")
    params: tuple[Any, ...] = (start, session_id) if session_id else (start,)
    rows = await app[BUS].store.fetchall(f"SELECT seq FROM events WHERE {where} ORDER BY seq", params)
    return [r[0] for r in rows]


async def test_concurrent_publishers_and_resuming_subscribers(app_client):
    app = app_client.app
    bus = app[BUS]
    hub = hub_of(app)
    hub.queue_size = 16
    rng = random.Random(4)
    sids = [(await create_session(app_client))["session_id"] for _ in range(3)]
    targets: dict[str | None, int] = {}
    published = asyncio.Event()

    async def batches(sid: str) -> None:  # several events per transaction and notification
        left = PER_PUBLISHER
        while left:
            n = min(left, rng.randint(1, 40))
            await publish(app, sid, "Batch", n)
            left -= n
            await asyncio.sleep(0)

    async def late_notifier(sid: str) -> None:  # notifies after others committed later seqs
        for _ in range(PER_PUBLISHER):
            events = await bus.store.write(lambda c: [insert_event(c, sid, "Late", {})])
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            bus.events.notify(events)

    async def reversed_groups(sid: str) -> None:  # concurrent writes, announced newest first
        left = PER_PUBLISHER
        while left:
            n = min(left, rng.randint(1, 8))
            groups = await asyncio.gather(
                *(bus.store.write(lambda c: [insert_event(c, sid, "Rev", {})]) for _ in range(n))
            )
            for events in reversed(groups):
                bus.events.notify(events)
            left -= n

    async def publishers() -> None:
        await asyncio.gather(batches(sids[0]), late_notifier(sids[1]), reversed_groups(sids[2]), batches(sids[1]))

        # One sentinel per session, in one transaction, so every subscriber's last expected
        # seq is known before any of them can see it.
        def sentinels(conn: Any) -> list[Any]:
            return [insert_event(conn, sid, "Sentinel", {}) for sid in sids]

        events = await bus.store.write(sentinels)
        for event in events:
            targets[event.session_id] = event.seq
        targets[None] = max(e.seq for e in events)
        bus.events.notify(events)
        published.set()

    def done(session_id: str | None, cursor: int) -> bool:
        return published.is_set() and cursor >= targets[session_id]

    async def ws_resumer(session_id: str | None, seen: list[int], start: list[int]) -> None:
        await asyncio.sleep(rng.random() * 0.2)  # join at a random point
        cursor = hub.head if rng.random() < 0.5 else rng.randint(0, hub.head)
        start.append(cursor)
        path = f"/api/sessions/{session_id}/events/stream" if session_id else "/api/events/stream"
        while not done(session_id, cursor):
            budget = rng.randint(1, 400)
            async with app_client.ws_connect(path, params={"since": str(cursor)}) as ws:
                assert (await ws_read(ws, 30))["type"] == "hello"
                while budget and not done(session_id, cursor):
                    msg = await ws_read(ws, 30)
                    if msg["type"] == "event":
                        seen.append(msg["event"]["seq"])
                        cursor = msg["event"]["seq"]
                        budget -= 1
                    if rng.random() < 0.01:
                        await asyncio.sleep(0.01)  # a slow moment: the queue overflows

    async def sse_resumer(session_id: str | None, seen: list[int], start: list[int]) -> None:
        await asyncio.sleep(rng.random() * 0.2)
        cursor = rng.randint(0, hub.head)
        start.append(cursor)
        path = f"/api/sessions/{session_id}/events/stream" if session_id else "/api/events/stream"
        while not done(session_id, cursor):
            budget = rng.randint(1, 400)
            resp = await app_client.get(path, headers={"Accept": "text/event-stream", "Last-Event-ID": str(cursor)})
            assert resp.status == 200
            async for frame in sse_frames(resp):
                if frame.get("event", "").startswith("stream."):
                    continue
                seen.append(int(frame["id"]))
                cursor = int(frame["id"])
                budget -= 1
                if not budget or done(session_id, cursor):
                    break
            resp.close()

    plan = [
        (ws_resumer, None),
        (ws_resumer, None),
        (ws_resumer, sids[1]),
        (ws_resumer, sids[2]),
        (sse_resumer, None),
        (sse_resumer, sids[0]),
    ]
    logs: list[tuple[str | None, list[int], list[int]]] = [(sid, [], []) for _, sid in plan]
    await asyncio.wait_for(
        asyncio.gather(
            publishers(),
            *(fn(sid, seen, start) for (fn, sid), (_, seen, start) in zip(plan, logs, strict=True)),
        ),
        timeout=120,
    )

    for session_id, seen, start in logs:
        assert seen == await _expected(app, start[0], session_id), (session_id, start)
    assert len(logs[0][1]) > 0
    # The paths this test is about really ran.
    assert hub.overflows > 0, "no subscriber ever overflowed its queue"
    assert hub.fills > 0, "notifications never arrived out of order"


async def test_stalled_subscriber_does_not_delay_others(unix_app):
    app, http = unix_app
    hub = hub_of(app)
    hub.queue_size = 32
    sid = (await create_session(http))["session_id"]
    path = f"/api/sessions/{sid}/events/stream"
    stalled = await http.ws_connect(path)
    healthy = await http.ws_connect(path)
    assert (await ws_read(stalled))["type"] == "hello"
    assert (await ws_read(healthy))["type"] == "hello"
    total = 3000
    blob = "x" * 4096  # ~12 MB in all: far more than the socket buffers hold

    async def publisher() -> list[int]:
        seqs: list[int] = []
        for _ in range(total // 50):
            seqs += [e.seq for e in await publish(app, sid, "Big", 50, data={"blob": blob})]
        return seqs

    seqs, got = await asyncio.gather(publisher(), ws_events(healthy, total, timeout=60))
    # Every event was published and the healthy subscriber has all of them, while the
    # stalled one has not read a single message.
    assert [e["seq"] for e in got] == seqs
    subs = {s.delivered: s for s in hub.subscriptions()}
    lagging = subs[min(subs)]
    assert lagging.delivered < total
    assert lagging.overflows >= 1  # it was switched to replay from the store...
    assert lagging.max_buffered <= 32  # ...and never held more than its bound

    # Once it reads again it gets everything, in order, exactly once.
    notices: list[str] = []
    received: list[int] = []
    while len(received) < total:
        msg = await ws_read(stalled, 60)
        if msg["type"] == "event":
            received.append(msg["event"]["seq"])
        else:
            notices.append(msg["type"])
    assert received == seqs
    assert "lagging" in notices
    # It is live again: a new event arrives as a live event.
    more = await publish(app, sid, "After")
    msg = await ws_read(stalled, 30)
    while msg["type"] != "event":
        msg = await ws_read(stalled, 30)
    assert msg["event"]["seq"] == more[0].seq
    await stalled.close()
    await healthy.close()


async def test_seam_many_subscriptions_starting_during_publishing(make_client):
    """Hundreds of subscriptions start just behind the head while events pour in: each
    replays from the store and switches to live in the middle of the traffic."""
    # synchronous=normal: commits as fast as the store can go, so many land during replays.
    app_client = await make_client(LLMGINE_DB_SYNCHRONOUS="normal")
    app = app_client.app
    hub = hub_of(app)
    hub.queue_size = 64
    rng = random.Random(7)
    sid = (await create_session(app_client))["session_id"]
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            await publish(app, sid, "P", rng.randint(1, 10))
            await asyncio.sleep(0)

    async def subscriber() -> tuple[int, list[int]]:
        await asyncio.sleep(rng.random() * 0.5)
        start = max(0, hub.head - rng.randint(0, 450))
        sub = await hub.subscribe(StreamFilter(session_id=None), start)
        seen: list[int] = []
        try:
            while len(seen) < 600:
                for item in await asyncio.wait_for(sub.get(), 30):
                    if isinstance(item, Event):
                        seen.append(item.seq)
        finally:
            sub.close()
        return start, seen

    pub = asyncio.create_task(publisher())
    results = await asyncio.wait_for(asyncio.gather(*(subscriber() for _ in range(300))), 120)
    stop.set()
    await pub
    for start, seen in results:
        expected = await _expected(app, start, None)
        assert seen == expected[: len(seen)], start
