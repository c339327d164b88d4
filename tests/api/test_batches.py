"""POST /commands/batch: modes, stop_on_error, all-or-nothing validation, idempotency."""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import BLOCK_MS, DUMMY, events, session_with_engine
from tests.conftest import assert_envelope, create_session
from tests.eventually import eventually


def cmd(prompt: str, **params: Any) -> dict[str, Any]:
    return {"command_type": DUMMY, "parameters": {"prompt": prompt, **params}}


async def post_batch(
    client: Any,
    sid: str,
    commands: list[dict[str, Any]],
    *,
    wait: float | None = 30,
    expect: int | None = None,
    headers: dict[str, str] | None = None,
    **options: Any,
):
    params = {"wait": str(wait)} if wait is not None else {}
    resp = await client.post(
        f"/api/sessions/{sid}/commands/batch", params=params, headers=headers, json={"commands": commands, **options}
    )
    if expect is not None:
        assert resp.status == expect, await resp.text()
    return resp, await resp.json()


async def count(client: Any, sid: str, status: str) -> int:
    resp = await client.get(f"/api/sessions/{sid}/commands", params={"status": status})
    return (await resp.json())["total"]


async def test_parallel_batch_returns_one_record_per_command_in_order(app_client):
    sid, _ = await session_with_engine(app_client)
    resp, batch = await post_batch(app_client, sid, [cmd(f"p{i}") for i in range(5)], expect=200)
    assert batch["mode"] == "parallel" and batch["stop_on_error"] is False
    assert batch["status"] == "finished" and batch["batch_id"]
    assert [c["status"] for c in batch["commands"]] == ["completed"] * 5
    assert [c["result"]["response"] for c in batch["commands"]] == [f"Dummy response to: p{i}" for i in range(5)]
    assert {c["batch_id"] for c in batch["commands"]} == {batch["batch_id"]}
    got = await (await app_client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}")).json()
    assert [c["command_id"] for c in got["commands"]] == [c["command_id"] for c in batch["commands"]]
    # Without waiting: 202 with queued records.
    resp, queued = await post_batch(app_client, sid, [cmd("a"), cmd("b")], wait=None, expect=202)
    assert [c["status"] for c in queued["commands"]] == ["queued", "queued"]


async def test_parallel_means_concurrently_and_sequential_one_by_one(app_client):
    sid, _ = await session_with_engine(app_client)
    _, batch = await post_batch(app_client, sid, [cmd(f"s{i}", delay_ms=BLOCK_MS) for i in range(3)], wait=None)

    async def all_executing() -> bool:
        return await count(app_client, sid, "executing") == 3

    await eventually(all_executing)
    for c in batch["commands"]:
        await app_client.post(f"/api/sessions/{sid}/commands/{c['command_id']}/cancel")

    sid2, _ = await session_with_engine(app_client)
    _, seq = await post_batch(
        app_client, sid2, [cmd(f"q{i}", delay_ms=BLOCK_MS) for i in range(3)], wait=None, mode="sequential"
    )
    ids = [c["command_id"] for c in seq["commands"]]
    for cid in ids:

        async def running(cid: str = cid) -> bool:
            rec = await (await app_client.get(f"/api/sessions/{sid2}/commands/{cid}")).json()
            return rec["status"] == "executing"

        await eventually(running)
        assert await count(app_client, sid2, "executing") == 1
        await app_client.post(f"/api/sessions/{sid2}/commands/{cid}/cancel")
    started = [e["data"]["command_id"] for e in await events(app_client, sid2, event_type="CommandStarted")]
    assert started == ids


async def test_sequential_runs_in_the_given_order_not_by_priority(app_client):
    sid, _ = await session_with_engine(app_client)
    commands = [
        {**cmd("low"), "metadata": {"priority": "low"}},
        {**cmd("high"), "metadata": {"priority": "high"}},
        cmd("normal"),
    ]
    _, batch = await post_batch(app_client, sid, commands, mode="sequential", expect=200)
    started = [e["data"]["command_id"] for e in await events(app_client, sid, event_type="CommandStarted")]
    assert started == [c["command_id"] for c in batch["commands"]]


async def test_stop_on_error(app_client):
    sid, _ = await session_with_engine(app_client)
    commands = [cmd("ok"), cmd("bad", fail=True), cmd("never")]
    _, batch = await post_batch(app_client, sid, commands, mode="sequential", stop_on_error=True, expect=200)
    assert [c["status"] for c in batch["commands"]] == ["completed", "failed", "cancelled"]
    assert batch["commands"][2]["error"]["code"] == "COMMAND_CANCELLED"

    # Without stop_on_error every command runs.
    _, batch = await post_batch(app_client, sid, commands, mode="sequential", expect=200)
    assert [c["status"] for c in batch["commands"]] == ["completed", "failed", "completed"]

    # Parallel: a failure cancels what is still running.
    _, batch = await post_batch(
        app_client, sid, [cmd("slow", delay_ms=BLOCK_MS), cmd("bad", fail=True)], stop_on_error=True, expect=200
    )
    assert [c["status"] for c in batch["commands"]] == ["cancelled", "failed"]


async def test_validation_is_all_or_nothing(app_client):
    sid, _ = await session_with_engine(app_client)
    before = len(await events(app_client, sid))
    bad_priority = [cmd("a"), {**cmd("b"), "metadata": {"priority": "asap"}}, cmd("c")]
    _, body = await post_batch(app_client, sid, bad_priority, expect=422)
    error = assert_envelope(body, "VALIDATION_ERROR")
    assert error["details"]["index"] == 1
    assert error["details"]["field"] == "commands[1].metadata.priority"

    missing_type = [cmd("a"), cmd("b"), {"parameters": {}}]
    _, body = await post_batch(app_client, sid, missing_type, expect=422)
    error = assert_envelope(body, "VALIDATION_ERROR")
    assert error["details"]["index"] == 2 and error["details"]["field"] == "commands[2].command_type"

    no_handler = [cmd("a"), {"command_type": "Nobody"}]
    _, body = await post_batch(app_client, sid, no_handler, expect=404)
    error = assert_envelope(body, "HANDLER_NOT_FOUND")
    assert error["details"]["index"] == 1

    for options in ({"mode": "random"}, {"stop_on_error": "yes"}):
        _, body = await post_batch(app_client, sid, [cmd("a")], expect=422, **options)
    _, body = await post_batch(app_client, sid, [], expect=422)
    assert assert_envelope(body, "VALIDATION_ERROR")["details"]["field"] == "commands"

    assert (await (await app_client.get(f"/api/sessions/{sid}/commands")).json())["total"] == 0
    assert len(await events(app_client, sid)) == before


async def test_batch_in_unknown_or_closed_session(app_client):
    _, body = await post_batch(app_client, "nope", [cmd("a")], expect=404)
    assert_envelope(body, "SESSION_NOT_FOUND")
    sid = (await create_session(app_client))["session_id"]
    await app_client.delete(f"/api/sessions/{sid}")
    _, body = await post_batch(app_client, sid, [cmd("a")], expect=409)
    assert_envelope(body, "SESSION_CLOSED")


async def test_batch_idempotency(app_client):
    sid, _ = await session_with_engine(app_client)
    headers = {"Idempotency-Key": "batch-1"}
    _, first = await post_batch(app_client, sid, [cmd("a"), cmd("b")], headers=headers, expect=200)
    resp, again = await post_batch(app_client, sid, [cmd("a"), cmd("b")], headers=headers, expect=200)
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert again["batch_id"] == first["batch_id"]
    assert [c["command_id"] for c in again["commands"]] == [c["command_id"] for c in first["commands"]]
    assert (await (await app_client.get(f"/api/sessions/{sid}/commands")).json())["total"] == 2
    _, body = await post_batch(app_client, sid, [cmd("a")], headers=headers, expect=422)
    assert_envelope(body, "IDEMPOTENCY_KEY_REUSED")


async def test_waiting_for_a_large_batch(app_client):
    """?wait on 2,000 commands: every one completed when the answer comes (the wait counts
    them down; it used to re-register on all that were left after each one finished)."""
    sid, _ = await session_with_engine(app_client)
    _, body = await post_batch(app_client, sid, [cmd(f"p{i}") for i in range(2000)], wait=120, expect=200)
    assert [c["status"] for c in body["commands"]] == ["completed"] * 2000


async def test_a_wait_ends_when_the_daemon_drains(app_client):
    """Shutdown begins while a request waits for a batch: the running command finishes, the
    queued ones stay queued for the next start, and the request is answered then, not at the
    end of its wait."""
    import asyncio

    from llmgine_daemon.api.keys import BUS

    sid, _ = await session_with_engine(app_client)
    waiting = asyncio.create_task(
        post_batch(app_client, sid, [cmd(f"p{i}", delay_ms=300) for i in range(3)], wait=60, mode="sequential")
    )
    runner = app_client.app[BUS].commands.runner

    async def one_runs() -> bool:
        return any(j.state == "running" for j in runner.jobs.values())

    await eventually(one_runs)
    runner.drain()
    resp, body = await asyncio.wait_for(waiting, 10)  # not the 60 s of its wait
    assert resp.status == 202  # not all finished
    statuses = [c["status"] for c in body["commands"]]
    assert statuses[0] == "completed" and statuses[1:] == ["queued", "queued"], statuses


async def test_a_batch_past_page_bytes_is_sent_whole_part_by_part(app_client, monkeypatch):
    """A batch (up to 10,000 commands, each with parameters and a result up to 1 MiB) was built
    whole in memory for each GET of it, and for its submission's answer with ?wait (held with
    every result until then): gigabytes for any session token. Past PAGE_BYTES its
    commands are read and sent part by part (chunked, bus/commands/answers.py), and the answer
    is the same JSON, its fields in the same order, ``status`` and ``usage`` included."""
    monkeypatch.setattr("llmgine_daemon.bus.pages.PAGE_BYTES", 16_000)
    sid, _ = await session_with_engine(app_client)
    resp, posted = await post_batch(app_client, sid, [cmd("x" * 3000, i=i) for i in range(12)], expect=200)
    # The submission's answer with ?wait too: its results are read and sent the same way.
    assert resp.headers.get("Transfer-Encoding") == "chunked" and posted["status"] == "finished"
    for query in ("", "?wait=5"):
        resp = await app_client.get(f"/api/sessions/{sid}/batches/{posted['batch_id']}{query}")
        assert resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
        got = await resp.json()
        assert list(got) == list(posted)  # the fields, in the contract's order
        assert got == posted
        assert [c["parameters"]["i"] for c in got["commands"]] == list(range(12))
        assert got["commands"][5]["result"]["response"] == "Dummy response to: " + "x" * 3000
    # A batch within PAGE_BYTES is one answer, as before.
    _, small = await post_batch(app_client, sid, [cmd("a"), cmd("b")], expect=200)
    resp = await app_client.get(f"/api/sessions/{sid}/batches/{small['batch_id']}")
    assert "Content-Length" in resp.headers and await resp.json() == small
    # ?wait on an unfinished long batch waits on its commands' states, then sends it whole.
    _, queued = await post_batch(app_client, sid, [cmd("y" * 3000, delay_ms=50) for _ in range(8)], wait=None)
    resp = await app_client.get(f"/api/sessions/{sid}/batches/{queued['batch_id']}?wait=30")
    got = await resp.json()
    assert resp.status == 200 and got["status"] == "finished" and len(got["commands"]) == 8
    assert {c["status"] for c in got["commands"]} == {"completed"}
    # An idempotent replay of a long batch answers it the same way.
    key = {"Idempotency-Key": "long-batch"}
    first, body = await post_batch(app_client, sid, [cmd("z" * 3000) for _ in range(8)], headers=key, expect=200)
    again, replay = await post_batch(app_client, sid, [cmd("z" * 3000) for _ in range(8)], headers=key, expect=200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers.get("Transfer-Encoding") == "chunked"
    assert replay == body
