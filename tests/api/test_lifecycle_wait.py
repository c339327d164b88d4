"""POST /api/commands/wait: one long request across sessions, woken by the bus (issue #20)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.bus_helpers import BLOCK_MS, cancel, session_with_engine, submit, token_session_with_engine
from tests.conftest import assert_envelope


async def wait(client: Any, expect: int = 200, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/commands/wait", json=body, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def test_waits_for_commands_of_several_sessions(app_client):
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    ok = await submit(app_client, a, "one", delay_ms=200)
    bad = await submit(app_client, b, "two", delay_ms=100, fail=True)
    answer = await wait(app_client, command_ids=[ok["command_id"], bad["command_id"]], timeout=30)
    assert answer["done"] is True
    assert [c["command_id"] for c in answer["commands"]] == [ok["command_id"], bad["command_id"]]
    assert [c["status"] for c in answer["commands"]] == ["completed", "failed"]
    assert sorted(answer["reached"]) == sorted([ok["command_id"], bad["command_id"]])


async def test_any_answers_at_the_first_and_timeout_answers_not_done(app_client):
    sid, _ = await session_with_engine(app_client)
    other, _ = await session_with_engine(app_client)
    blocked = await submit(app_client, sid, "long", delay_ms=BLOCK_MS)
    quick = await submit(app_client, other, "quick", delay_ms=50)
    answer = await wait(app_client, command_ids=[blocked["command_id"], quick["command_id"]], any=True, timeout=30)
    assert answer["done"] is True and answer["reached"] == [quick["command_id"]]
    # The long one never finishes in 0.2 s: the answer says so instead of failing.
    answer = await wait(app_client, command_ids=[blocked["command_id"]], timeout=0.2)
    assert answer["done"] is False and answer["reached"] == []
    assert answer["commands"][0]["status"] == "executing"
    await cancel(app_client, sid, blocked["command_id"])


async def test_a_named_status_and_a_cancel_wake_the_wait(app_client):
    sid, _ = await session_with_engine(app_client)
    first = await submit(app_client, sid, "first", delay_ms=BLOCK_MS)
    second = await submit(app_client, sid, "second", delay_ms=BLOCK_MS)  # queued behind the first
    waiter = asyncio.ensure_future(
        wait(app_client, command_ids=[second["command_id"]], status=["executing"], timeout=60)
    )
    await asyncio.sleep(0)
    assert not waiter.done()
    await cancel(app_client, sid, first["command_id"])  # the second starts: the wait answers
    answer = await waiter
    assert answer["done"] is True and answer["commands"][0]["status"] == "executing"
    waiter = asyncio.ensure_future(wait(app_client, command_ids=[second["command_id"]], timeout=60))
    await cancel(app_client, sid, second["command_id"])
    answer = await waiter
    assert answer["commands"][0]["status"] == "cancelled"


async def test_a_batch_by_id(app_client):
    sid, _ = await session_with_engine(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands/batch",
        json={"commands": [{"command_type": "DummyEngineCommand", "parameters": {"prompt": str(i)}} for i in range(3)]},
    )
    batch = await resp.json()
    answer = await wait(app_client, batch_id=batch["batch_id"], timeout=30)
    assert answer["done"] is True
    assert [c["status"] for c in answer["commands"]] == ["completed"] * 3


async def test_unknown_ids_and_bad_bodies_are_refused(app_client):
    error = assert_envelope(await wait(app_client, 404, command_ids=["nope"]), "COMMAND_NOT_FOUND")
    assert error["details"]["command_ids"] == ["nope"]
    assert await wait(app_client) == {"commands": [], "done": True, "reached": []}  # nothing to wait for
    assert (await wait(app_client, any=True, timeout=300))["done"] is True
    assert_envelope(await wait(app_client, 422, command_ids=["x"], timeout=301), "VALIDATION_ERROR")
    assert_envelope(await wait(app_client, 422, command_ids=["x"], status=["done"]), "VALIDATION_ERROR")
    assert_envelope(await wait(app_client, 404, batch_id="nope"), "NOT_FOUND")


async def test_a_session_token_waits_only_for_its_own_session(app_client):
    sid, as_token = await token_session_with_engine(app_client)
    other, _ = await session_with_engine(app_client)
    own = await submit(app_client, sid, "mine")
    foreign = await submit(app_client, other, "theirs")
    answer = await wait(app_client, headers=as_token, command_ids=[own["command_id"]], timeout=30)
    assert answer["commands"][0]["status"] == "completed"
    body = await wait(app_client, 404, headers=as_token, command_ids=[foreign["command_id"]], timeout=1)
    assert_envelope(body, "COMMAND_NOT_FOUND")


async def test_an_answer_past_page_bytes_is_sent_whole_part_by_part(app_client, monkeypatch):
    """A wait's answer (up to 1,000 commands, or a batch's, with parameters and results up to
    1 MiB each) was built whole in memory, and the wait held every record whole while it
    waited. It holds their states only now, and past PAGE_BYTES the records are read again and
    sent part by part (chunked): the same JSON, in the order asked for."""
    monkeypatch.setattr("llmgine_daemon.bus.pages.PAGE_BYTES", 16_000)
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    ids = []
    for i in range(10):
        record = await submit(app_client, (a, b)[i % 2], "x" * 3000, delay_ms=20, i=i)
        ids.append(record["command_id"])
    ids.reverse()  # the order asked for, not the order stored
    resp = await app_client.post("/api/commands/wait", json={"command_ids": ids, "timeout": 30})
    assert resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked"
    answer = await resp.json()
    assert list(answer) == ["commands", "done", "reached"]
    assert answer["done"] is True and sorted(answer["reached"]) == sorted(ids)
    assert [c["command_id"] for c in answer["commands"]] == ids
    assert [c["parameters"]["i"] for c in answer["commands"]] == list(range(9, -1, -1))
    assert {c["result"]["response"] for c in answer["commands"]} == {"Dummy response to: " + "x" * 3000}
    # A batch's commands, the same way; and a short answer is one answer, as before.
    resp = await app_client.post(
        f"/api/sessions/{a}/commands/batch",
        json={"commands": [{"command_type": "DummyEngineCommand", "parameters": {"prompt": "y" * 4000}}] * 6},
    )
    batch = await resp.json()
    resp = await app_client.post("/api/commands/wait", json={"batch_id": batch["batch_id"], "timeout": 30})
    answer = await resp.json()
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert [c["command_id"] for c in answer["commands"]] == [c["command_id"] for c in batch["commands"]]
    assert {c["status"] for c in answer["commands"]} == {"completed"} and answer["done"] is True
    resp = await app_client.post("/api/commands/wait", json={"command_ids": ids[:2], "timeout": 30})
    assert "Content-Length" in resp.headers and len((await resp.json())["commands"]) == 2
