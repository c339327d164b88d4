"""A batch whose handlers are all eager runs set by set (bus/commands/batchset.py): chunks of
commands stored with one statement per table in one transaction. The same records, events and
order as command by command, across chunk boundaries, with failures and with a member that
suspends in the middle."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS, SETTINGS
from llmgine_daemon.bus.commands.batchset import CHUNK

from tests.api.bus_helpers import BLOCK_MS, events, session_with_engine
from tests.api.test_batches import cmd, post_batch
from tests.eventually import eventually


async def all_events(client: Any, sid: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        page = await events(client, sid, after=got[-1]["seq"] if got else 0)
        if not page:
            return got
        got += page


def per_command(evs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each command's events, in log order: CommandStarted, the engine's, CommandResult."""
    by: dict[str, list[str]] = {}
    for e in evs:
        cid = e["data"].get("command_id")
        if cid is not None:
            by.setdefault(cid, []).append(e["event_type"])
    return by


def contiguous(evs: list[dict[str, Any]], ids: list[str]) -> None:
    """The commands' events come one command after another, in the batch's order."""
    order = [e["data"]["command_id"] for e in evs if e["data"].get("command_id") in set(ids)]
    runs = [cid for i, cid in enumerate(order) if i == 0 or order[i - 1] != cid]
    assert runs == ids


DUMMY_EVENTS = ["CommandStarted", "DummyEngineStatusUpdate", "DummyEngineStatusUpdate", "CommandResult"]


async def test_a_batch_larger_than_a_chunk(app_client):
    sid, _ = await session_with_engine(app_client)
    n = CHUNK * 2 + 7
    _, batch = await post_batch(app_client, sid, [cmd(f"p{i}") for i in range(n)], mode="sequential", expect=200)
    assert [c["status"] for c in batch["commands"]] == ["completed"] * n
    assert [c["result"]["response"] for c in batch["commands"]] == [f"Dummy response to: p{i}" for i in range(n)]
    for c in batch["commands"]:
        assert c["started_at"] and c["finished_at"] and c["started_at"] <= c["finished_at"]
    evs = await all_events(app_client, sid)
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    ids = [c["command_id"] for c in batch["commands"]]
    by = per_command(evs)
    assert all(by[cid] == DUMMY_EVENTS for cid in ids)
    contiguous(evs, ids)
    # The stored records say the same as the answer.
    got = await (await app_client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}")).json()
    assert [(c["status"], c["result"]) for c in got["commands"]] == [
        (c["status"], c["result"]) for c in batch["commands"]
    ]
    session = await (await app_client.get(f"/api/sessions/{sid}")).json()
    assert session["counts"]["commands"] == n
    assert session["counts"]["events"] == len(evs)


async def test_stop_on_error_across_a_chunk(app_client):
    sid, _ = await session_with_engine(app_client)
    n, bad = CHUNK + 20, CHUNK - 3
    commands = [cmd(f"p{i}", fail=i == bad) for i in range(n)]
    for mode in ("sequential", "parallel"):
        _, batch = await post_batch(app_client, sid, commands, mode=mode, stop_on_error=True, expect=200)
        statuses = [c["status"] for c in batch["commands"]]
        assert statuses == ["completed"] * bad + ["failed"] + ["cancelled"] * (n - bad - 1), mode
        assert batch["commands"][bad]["error"]["code"] == "COMMAND_EXECUTION_FAILED"
    _, batch = await post_batch(app_client, sid, commands, expect=200)
    assert [c["status"] for c in batch["commands"]].count("failed") == 1
    assert [c["status"] for c in batch["commands"]].count("completed") == n - 1


async def test_a_member_that_waits_in_the_middle(app_client):
    sid, _ = await session_with_engine(app_client)
    commands = [cmd("a"), cmd("b"), cmd("slow", delay_ms=50), cmd("c"), cmd("d")]
    for mode in ("sequential", "parallel"):
        _, batch = await post_batch(app_client, sid, commands, mode=mode, expect=200)
        assert [c["status"] for c in batch["commands"]] == ["completed"] * 5, mode
        by = per_command(await all_events(app_client, sid))
        assert all(by[c["command_id"]] == DUMMY_EVENTS for c in batch["commands"]), mode
    # Sequential: one after another, in the given order.
    _, batch = await post_batch(app_client, sid, commands, mode="sequential", expect=200)
    ids = [c["command_id"] for c in batch["commands"]]
    contiguous(await all_events(app_client, sid), ids)


async def test_cancel_a_set_batch_member_that_waits(app_client):
    sid, _ = await session_with_engine(app_client)
    commands = [cmd("a"), cmd("slow", delay_ms=BLOCK_MS), cmd("b")]
    _, batch = await post_batch(app_client, sid, commands, mode="sequential", wait=None, expect=202)
    slow = batch["commands"][1]["command_id"]

    async def executing() -> bool:
        resp = await app_client.get(f"/api/sessions/{sid}/commands/{slow}")
        return (await resp.json())["status"] == "executing"

    await eventually(executing)
    resp = await app_client.post(f"/api/sessions/{sid}/commands/{slow}/cancel")
    assert resp.status == 200, await resp.text()
    got = await (await app_client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}", params={"wait": "30"})).json()
    assert [c["status"] for c in got["commands"]] == ["completed", "cancelled", "completed"]
    by = per_command(await all_events(app_client, sid))
    assert by[slow] == ["CommandStarted", "DummyEngineStatusUpdate", "CommandResult"]


def lock_database(client: Any) -> sqlite3.Connection:
    """Another process's write lock on the app's database (ROLLBACK and close to release)."""
    other = sqlite3.connect(client.app[SETTINGS].database_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.mark.sqlite_only(reason="another process holding SQLite's file lock")
async def test_chunks_that_wait_for_the_lock_keep_the_batch_order(make_client):
    """A chunk runs while the one before it commits, and is stored only after it: a write that
    waits for the lock (and is retried) holds the next chunks back, in order."""
    client = await make_client(LLMGINE_DB_BUSY_TIMEOUT="0.2")
    sid, _ = await session_with_engine(client)
    n = CHUNK * 3 + 5
    _, batch = await post_batch(client, sid, [cmd(f"p{i}") for i in range(n)], mode="sequential", wait=None)
    other = lock_database(client)
    try:
        await asyncio.sleep(0.6)  # the runner's writes meet the lock, time out and retry
    finally:
        other.execute("ROLLBACK")
        other.close()
    got = await (await client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}", params={"wait": "30"})).json()
    assert [c["status"] for c in got["commands"]] == ["completed"] * n
    evs = await all_events(client, sid)
    ids = [c["command_id"] for c in got["commands"]]
    by = per_command(evs)
    assert all(by[cid] == DUMMY_EVENTS for cid in ids)
    contiguous(evs, ids)


@pytest.mark.sqlite_only(reason="another process holding SQLite's file lock")
async def test_a_batch_stopped_while_its_chunk_cannot_commit(make_client):
    """Stopped while a chunk's write cannot commit: that chunk and the one that ran meanwhile
    stay queued in the store, and the next start runs them once each, in the batch's order."""
    first = await make_client(LLMGINE_DB_BUSY_TIMEOUT="0.2")
    sid, _ = await session_with_engine(first)
    n = CHUNK * 4
    _, batch = await post_batch(first, sid, [cmd(f"p{i}") for i in range(n)], mode="sequential", wait=None)
    other = lock_database(first)
    try:
        await first.close()  # the runner gives up on its write (STOP_RETRY_S)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with sqlite3.connect(first.app[SETTINGS].database_path) as conn:
        left = conn.execute(
            "SELECT COUNT(*) FROM commands WHERE batch_id = ? AND status = 'queued'", (batch["batch_id"],)
        )
        assert left.fetchone()[0] > 0  # the stop came before the batch was through
    second = await make_client()
    got = await (await second.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}", params={"wait": "30"})).json()
    assert [c["status"] for c in got["commands"]] == ["completed"] * n
    assert [c["result"]["response"] for c in got["commands"]] == [f"Dummy response to: p{i}" for i in range(n)]
    evs = await all_events(second, sid)
    ids = [c["command_id"] for c in got["commands"]]
    by = per_command(evs)
    assert all(by[cid] == DUMMY_EVENTS for cid in ids)  # none stored twice, none lost
    contiguous(evs, ids)


@pytest.mark.sqlite_only(reason="a slow disk stood in for by delaying the SQLite writer's COMMIT")
async def test_a_member_cancelled_while_the_chunk_before_it_commits(app_client):
    """The member after a full chunk waits (it suspends) while that chunk still commits; a
    cancel then ends that member only: the chunk is stored and answered, the rest run."""
    sid, _ = await session_with_engine(app_client)
    bus = app_client.app[BUS]
    aconn = bus.store._writer_conn
    real = aconn._execute

    async def slow_disk(fn: Any, *args: Any, **kwargs: Any) -> Any:  # a COMMIT's fsync takes 0.5 s
        if args == ("COMMIT",):
            await asyncio.sleep(0.5)
        return await real(fn, *args, **kwargs)

    aconn._execute = slow_disk
    try:
        commands = [cmd(f"p{i}") for i in range(CHUNK)] + [cmd("slow", delay_ms=BLOCK_MS), cmd("x"), cmd("y")]
        _, batch = await post_batch(app_client, sid, commands, mode="sequential", wait=None, expect=202)
        slow = batch["commands"][CHUNK]["command_id"]
        runner = bus.commands.runner
        await eventually(lambda: (job := runner.jobs.get(slow)) is not None and job.state == "running")
        resp = await app_client.post(f"/api/sessions/{sid}/commands/{slow}/cancel")
        assert resp.status == 200, await resp.text()
        got = await (
            await app_client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}", params={"wait": "30"})
        ).json()
    finally:
        aconn._execute = real
    assert [c["status"] for c in got["commands"]] == ["completed"] * CHUNK + ["cancelled", "completed", "completed"]
    assert not bus.commands.runner.jobs  # nothing left behind in memory
