"""Large events and a client that does not read: what a stream hands its sender at once (and
the sender holds until the client has read it) is bounded in bytes, not only in events. A
session token's 300 events of 900 KB and four SSE streams with ``since=0`` that never read
grew llmgined by 4 GB: each replay round read 500 events whole."""

from __future__ import annotations

from llmgine_daemon.bus.stream_filter import StreamFilter
from llmgine_daemon.bus.streams import LIVE_BYTES, REPLAY_BYTES

from tests.conftest import create_session
from tests.eventually import eventually
from tests.streams.conftest import hub_of, publish

BLOB = "x" * 600_000


async def test_a_replay_round_reads_a_bounded_number_of_bytes(app_client):
    sid = (await create_session(app_client))["session_id"]
    await publish(app_client.app, sid, "Big", 20, data={"blob": BLOB})
    hub = hub_of(app_client.app)
    page, more = await hub.read_after(0, StreamFilter(sid), 500)
    assert 1 <= len(page) <= REPLAY_BYTES // len(BLOB) + 1 and more, len(page)
    assert [e.seq for e in page] == sorted(e.seq for e in page)
    # Page by page, the whole session comes back, in order, nothing skipped.
    seen, cursor, more = [], 0, True
    while more:
        batch, more = await hub.read_after(cursor, StreamFilter(sid), 500)
        seen.extend(e.event_type for e in batch)
        cursor = batch[-1].seq if batch else cursor
    assert seen == ["SessionStarted"] + ["Big"] * 20
    # Small events still come 500 to a page.
    await publish(app_client.app, sid, "Small", 600)
    page, more = await hub.read_after(cursor, StreamFilter(sid), 500)
    assert len(page) == 500 and more


async def test_a_subscriber_that_does_not_read_holds_a_bounded_number_of_bytes(app_client):
    sid = (await create_session(app_client))["session_id"]
    hub = hub_of(app_client.app)
    sub = await hub.subscribe(StreamFilter(sid), None)  # live; nobody calls get()
    try:
        for _ in range(40):
            await publish(app_client.app, sid, "Big", data={"blob": BLOB})
        await eventually(lambda: hub.head >= 41, message="the events dispatched")
        held = sum(len(e.data["blob"]) for e in sub._buffer)
        assert held <= LIVE_BYTES + len(BLOB), f"{held} bytes of events waiting"
        assert sub.overflows >= 1, "never switched to catching up from the store"
        # What it gets when it reads: every event, in order, nothing lost.
        seqs: list[int] = []
        while len(seqs) < 40:
            items = await sub.get()
            seqs.extend(item.seq for item in items if getattr(item, "event_type", None) == "Big")
        assert seqs == list(range(seqs[0], seqs[0] + 40))
    finally:
        sub.close()
