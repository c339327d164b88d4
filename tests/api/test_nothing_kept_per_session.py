"""Nothing is kept per finished session: after sessions have been created, used (an engine,
commands, events, reads, an event stream over WebSocket and one over SSE) and closed, no type
of Python object counts more than before (bench/README.md, "Memory under a long mixed load",
has the soak this stands in for: RSS levels off, and no object is kept per operation)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import aiohttp

from tests.api.bus_helpers import session_with_engine, submit
from tests.eventually import eventually

ROUNDS = 40


async def one_session(app_client: Any) -> None:
    """One session's life, through a client of its own (pytest-aiohttp's test client keeps
    every response it made, for its own clean-up: those are not the daemon's)."""
    base = str(app_client.make_url("/"))
    async with aiohttp.ClientSession(base, headers=dict(app_client.session.headers)) as client:
        await use_a_session(client)


async def use_a_session(client: aiohttp.ClientSession) -> None:
    sid, _ = await session_with_engine(client)
    async with client.ws_connect(f"/api/sessions/{sid}/events/stream") as ws:
        for i in range(3):
            record = await submit(client, sid, f"p{i}", wait=30)
            assert record["status"] == "completed", record
        resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "Soak", "data": {"i": 1}})
        assert resp.status == 201, await resp.text()
        seen: list[str] = []
        while "Soak" not in seen:  # the last one published: every event before it came too
            frame = await ws.receive_json(timeout=30)
            if frame["type"] == "event":
                seen.append(frame["event"]["event_type"])
    async with client.get(f"/api/sessions/{sid}/events/stream", headers={"Accept": "text/event-stream"}) as sse:
        async for line in sse.content:
            if line.startswith(b"data:"):
                break
    for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/events", f"/api/sessions/{sid}/commands"):
        assert (await client.get(path)).status == 200
    assert (await client.delete(f"/api/sessions/{sid}")).status == 200


# Whose objects are counted: the daemon's, aiohttp's (requests, responses, WebSockets, their
# protocols) and asyncio's (tasks, futures, handles). Plain containers are not: bounded caches
# hold them by the hundred (yarl's URLs and their query multidicts, sqlite3's list of cursors,
# which it prunes every 200, spans waiting for the next flush, the queue view's per-second
# counts of the last minute), and anything kept per session holds an object of the daemon's.
OWNERS = ("llmgine_daemon", "aiohttp", "asyncio", "_asyncio")


def census() -> Counter[str]:
    gc.collect()
    counts: Counter[str] = Counter()
    for o in gc.get_objects():
        if isinstance(o, asyncio.TimerHandle) and o.cancelled():
            # A cancelled timer (a wait that ended before its 30 s) stays in the loop's heap
            # until its time or asyncio's clean-up of the heap: bounded, and not ours.
            continue
        kind = type(o)
        module = kind.__dict__.get("__module__")  # a metaclass's own is a descriptor
        if isinstance(module, str) and module.startswith(OWNERS):
            counts[f"{module}.{kind.__qualname__}"] += 1
    return counts


async def test_no_object_is_kept_per_finished_session(app_client):
    for _ in range(10):  # warm-up: caches of routes, statements and types fill once
        await one_session(app_client)
    before = census()
    assert before["llmgine_daemon.bus.core.Bus"] >= 1, "the census sees the daemon's objects"
    for _ in range(ROUNDS):
        await one_session(app_client)

    grown: dict[str, int] = {}

    def settled() -> bool:
        after = census()
        grown.clear()
        grown.update({t: after[t] - before[t] for t in after if after[t] - before[t] >= ROUNDS // 4})
        return not grown

    # Something kept per session would count ROUNDS (or a multiple) more, for good; what is in
    # flight or cached up to a bound moves by a few, and what is still finishing goes (on a
    # loaded machine, 11 spans were still held by the contexts of tasks ending).
    try:
        await eventually(settled, timeout=15, interval=0.2)
    except AssertionError:
        raise AssertionError(f"objects kept per session: {grown}") from None
