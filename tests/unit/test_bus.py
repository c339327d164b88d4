"""The bus on its own: a ``Bus`` over a real ``Store`` in a temp dir, no app, no HTTP.

The invariants of docs/architecture.md, checked where they are kept: listeners hear only
committed events, seq grows with every event, a session runs one command at a time while
sessions run in parallel, an unhandled command is refused before anything is stored, and
ending a session cancels what it had queued.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import Any

import pytest
from llmgine_daemon.bus.commands import validate
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import Command, CommandCreate, Event

from tests.eventually import eventually


async def session(bus: Bus) -> str:
    return (await bus.sessions.create(None, {})).session_id


def command(command_type: str, **parameters: Any) -> Any:
    return validate(CommandCreate(command_type=command_type, parameters=parameters))


async def test_listeners_hear_only_committed_events_each_with_a_greater_seq(bus: Bus):
    path = bus.store.path
    heard: list[tuple[int, bool]] = []

    def listener(event: Event) -> None:
        # A connection of its own sees only what has committed.
        with sqlite3.connect(path) as conn:
            stored = conn.execute("SELECT 1 FROM events WHERE seq = ?", (event.seq,)).fetchone()
        heard.append((event.seq, stored is not None))

    sid = await session(bus)
    unsubscribe = bus.events.subscribe(listener)
    try:
        published = [await bus.events.publish(sid, "Tick", {"n": n}, {}) for n in range(10)]
        await asyncio.gather(*(bus.events.publish(sid, "Tock", {"n": n}, {}) for n in range(20)))
    finally:
        unsubscribe()
    seqs = [event.seq for event, _ in published]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10  # one after another: increasing
    assert all(stored for _, stored in heard), heard
    assert len({seq for seq, _ in heard}) == len(heard) == 30  # each once
    rows = await bus.store.fetchall("SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))
    assert [r[0] for r in rows][1:] == sorted(seq for seq, _ in heard)  # after SessionStarted


async def test_one_command_at_a_time_per_session_and_sessions_in_parallel(bus: Bus):
    a, b = await session(bus), await session(bus)
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    both = asyncio.Event()

    async def handler(cmd: Command) -> dict[str, Any]:
        sid = cmd.session_id
        running[sid] += 1
        most[sid] = max(most[sid], running[sid])
        try:
            if sum(1 for n in running.values() if n) == 2:
                both.set()
            # Each session's first command waits for the other session's: only sessions that
            # run in parallel get past this.
            await asyncio.wait_for(both.wait(), 10)
            await asyncio.sleep(0.01)
            return {"n": cmd.parameters["n"]}
        finally:
            running[sid] -= 1

    for sid in (a, b):
        bus.handlers.register("Work", handler, session_id=sid)
    submitted = await asyncio.gather(
        *(bus.commands.submit(sid, command("Work", n=n)) for n in range(5) for sid in (a, b))
    )
    records = [rec for rec, _ in submitted]
    assert await bus.commands.wait(records, 30)
    finished = [await bus.commands.get(rec.session_id, rec.command_id) for rec in records]
    assert {rec.status for rec in finished} == {"completed"}, [r.error for r in finished]
    assert most == {a: 1, b: 1}


async def test_a_command_nobody_handles_is_refused_and_not_stored(bus: Bus):
    sid = await session(bus)
    with pytest.raises(BusError) as refused:
        await bus.commands.submit(sid, command("Nobody"))
    assert refused.value.code == "HANDLER_NOT_FOUND"
    assert await bus.store.fetchall("SELECT * FROM commands WHERE session_id = ?", (sid,)) == []


async def test_ending_a_session_cancels_what_it_runs_and_what_it_queued(bus: Bus):
    sid = await session(bus)
    started = asyncio.Event()

    async def forever(cmd: Command) -> None:
        started.set()
        await asyncio.Event().wait()

    bus.handlers.register("Forever", forever, session_id=sid)
    records = [(await bus.commands.submit(sid, command("Forever")))[0] for _ in range(3)]
    await eventually(started.is_set)
    await bus.sessions.close(sid)
    assert await bus.commands.wait(records, 10)
    statuses = [(await bus.commands.get(sid, rec.command_id)).status for rec in records]
    assert statuses == ["cancelled", "cancelled", "cancelled"]
    kinds = [
        r[0]
        for r in await bus.store.fetchall("SELECT event_type FROM events WHERE session_id = ? ORDER BY seq", (sid,))
    ]
    # Only the first ever started; its result is recorded once its handler has been cancelled,
    # which may be after SessionEnded.
    assert kinds[0] == "SessionStarted" and kinds.count("SessionEnded") == 1
    assert kinds.count("CommandStarted") == 1
