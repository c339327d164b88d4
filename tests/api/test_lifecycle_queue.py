"""GET /api/commands: the live queue across sessions, with positions, waits and run times."""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import BLOCK_MS, cancel, session_with_engine, submit, token_session_with_engine
from tests.conftest import assert_envelope
from tests.eventually import eventually


async def queue(client: Any, expect: int = 200, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    resp = await client.get("/api/commands", params=params, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def running(client: Any, n: int) -> dict[str, Any] | None:
    view = await queue(client)
    return view if view["counts"].get("executing") == n else None


async def test_queue_across_sessions_with_positions(app_client):
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    # On a shared database (PostgreSQL) a session's first command starts once its node holds
    # the session: each is waited for until it runs.
    run_a = await submit(app_client, a, "a0", delay_ms=BLOCK_MS)
    await eventually(lambda: running(app_client, 1))
    low = await submit(app_client, a, "a-low", delay_ms=BLOCK_MS, priority="low")
    high = await submit(app_client, a, "a-high", delay_ms=BLOCK_MS, priority="high")
    run_b = await submit(app_client, b, "b0", delay_ms=BLOCK_MS)
    view = await eventually(lambda: running(app_client, 2))
    by_id = {c["command_id"]: c for c in view["commands"]}
    assert set(by_id) == {run_a["command_id"], low["command_id"], high["command_id"], run_b["command_id"]}
    assert view["total"] == 4 and view["counts"] == {"executing": 2, "queued": 2}
    # No user code in this daemon: the sandbox pool started no worker, and says so.
    assert view["sandbox_state"] == "standby" and view["sandbox_workers"] == 1
    # The high-priority one starts next in its session, though submitted last.
    assert by_id[high["command_id"]]["position"] == 1 and by_id[low["command_id"]]["position"] == 2
    assert by_id[run_a["command_id"]]["position"] is None and by_id[run_a["command_id"]]["run_s"] >= 0
    assert by_id[low["command_id"]]["run_s"] is None and by_id[low["command_id"]]["wait_s"] >= 0
    # Oldest first; a status filter and a limit.
    assert [c["command_id"] for c in view["commands"]][0] == run_a["command_id"]
    only = await queue(app_client, status="queued", limit=1)
    assert only["total"] == 2 and len(only["commands"]) == 1 and only["commands"][0]["status"] == "queued"
    mine = await queue(app_client, session_id=b)
    assert [c["command_id"] for c in mine["commands"]] == [run_b["command_id"]]
    for sid, cid in ((a, high), (a, low), (a, run_a), (b, run_b)):
        await cancel(app_client, sid, cid["command_id"])
    view = await queue(app_client)
    assert view["commands"] == [] and view["finished_last_minute"].get("cancelled", 0) >= 4


async def test_a_session_token_sees_only_its_session(app_client):
    sid, as_token = await token_session_with_engine(app_client)
    other, _ = await session_with_engine(app_client)
    own = await submit(app_client, sid, "mine", delay_ms=BLOCK_MS)
    foreign = await submit(app_client, other, "theirs", delay_ms=BLOCK_MS)
    await eventually(lambda: running(app_client, 2))
    view = await queue(app_client, headers=as_token)
    assert [c["command_id"] for c in view["commands"]] == [own["command_id"]]
    assert view["counts"] == {"executing": 1} and view["sandbox_busy"] is None and view["sandbox_state"] is None
    # Asking for another session does not widen it.
    view = await queue(app_client, headers=as_token, session_id=other)
    assert [c["command_id"] for c in view["commands"]] == [own["command_id"]]
    everyone = await queue(app_client)
    assert {c["command_id"] for c in everyone["commands"]} >= {own["command_id"], foreign["command_id"]}
    await cancel(app_client, sid, own["command_id"])
    await cancel(app_client, other, foreign["command_id"])


async def test_bad_filters_are_refused(app_client):
    assert_envelope(await queue(app_client, 422, status="completed"), "VALIDATION_ERROR")
    assert_envelope(await queue(app_client, 422, limit=0), "VALIDATION_ERROR")


async def test_finished_counts_are_the_sessions_own_when_scoped(app_client):
    # A session token (or ?session_id=) sees how many of *its* commands finished in the last
    # minute, not the daemon's: other sessions' activity is not its business.
    sid, as_token = await token_session_with_engine(app_client)
    other, _ = await session_with_engine(app_client)
    for i in range(3):
        await submit(app_client, other, f"theirs-{i}", wait=10)
    await submit(app_client, sid, "mine", wait=10)
    await eventually(lambda: _finished(app_client, other, 3))
    await eventually(lambda: _finished(app_client, sid, 1))
    assert (await queue(app_client, headers=as_token))["finished_last_minute"] == {"completed": 1}
    assert (await queue(app_client, session_id=sid))["finished_last_minute"] == {"completed": 1}
    assert (await queue(app_client, session_id=other))["finished_last_minute"] == {"completed": 3}
    assert (await queue(app_client))["finished_last_minute"].get("completed", 0) >= 4


async def _finished(client: Any, session_id: str, n: int) -> bool:
    return (await queue(client, session_id=session_id))["finished_last_minute"].get("completed", 0) >= n


async def test_a_result_reaching_the_view_twice_counts_once(app_client):
    """A CommandResult may reach the queue view twice, notified here and read back from the
    store by the stream hub (on a shared database), in either order: it counts once."""
    import msgspec
    from llmgine_daemon.api.keys import BUS
    from llmgine_daemon.protocol import Event

    bus = app_client.app[BUS]
    sid, _ = await session_with_engine(app_client)
    await submit(app_client, sid, "one", wait=10)
    await eventually(lambda: _finished(app_client, sid, 1))
    page = await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": "CommandResult"})
    result = msgspec.convert((await page.json())["events"][0], Event)
    bus.events.read_back(result)  # notified when it committed; now read back, twice
    bus.events.read_back(result)
    assert (await queue(app_client, session_id=sid))["finished_last_minute"] == {"completed": 1}
    # Another node's result, read back by the hub, then handed over again (the view's own
    # listener: a made-up seq must not reach the stream hub), then read back again.
    later = msgspec.structs.replace(result, seq=result.seq + 1_000_000, event_id="later")
    bus.events.read_back(later)
    bus.commands.queue._on_event(later)
    bus.events.read_back(later)
    assert (await queue(app_client, session_id=sid))["finished_last_minute"] == {"completed": 2}


async def test_the_count_keeps_no_entry_per_finished_command(app_client):
    """A minute of finished commands is kept as counts per second and the seqs seen as ranges:
    memory grows with the sessions and the gaps, not with the commands (a set and an entry per
    command took ~190 bytes each: over 100 MB for a minute at 10,000 commands/s)."""
    from llmgine_daemon.api.keys import BUS

    watch = app_client.app[BUS].commands.queue
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands/batch",
        params={"wait": 30},
        json={"commands": [{"command_type": "DummyEngineCommand", "parameters": {"prompt": "x"}}] * 300},
    )
    assert resp.status == 200, await resp.text()
    await eventually(lambda: _finished(app_client, sid, 300))
    assert (await queue(app_client, session_id=sid))["finished_last_minute"] == {"completed": 300}
    assert len(watch._seen) <= 2, watch._seen.los
    assert sum(len(per_second) for _, per_second in watch._finished) <= 2 * len(watch._finished)


async def test_events_of_two_nodes_interleaved_keep_one_range(app_client):
    """On a shared database a node is handed its own events and reads back the others', one
    for one in turn at worst: the seqs seen stay one range (it once kept one per event)."""
    import msgspec
    from llmgine_daemon.api.keys import BUS
    from llmgine_daemon.protocol import Event

    watch = app_client.app[BUS].commands.queue
    before = len(watch._seen)
    start = 10_000_000
    for k in range(20_000):
        fields = {"event_id": f"e{k}", "session_id": "s", "event_type": "Tick", "seq": start + k}
        fields.update(timestamp="2026-12-06T00:00:00Z", data={}, metadata={}, source="api")
        watch._on_event(msgspec.convert(fields, Event))
    assert len(watch._seen) <= before + 1
