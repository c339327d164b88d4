"""Approval before a tool runs (bus/approvals.py, engines/approval.py): a ToolChat command
waits, nothing runs until a decision; approved (maybe with edited arguments), denied,
expired, cancelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.api.bus_helpers import cluster_node, events
from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, execute, provider_env
from tests.conftest import assert_envelope
from tests.eventually import eventually
from tests.fakes.provider import FakeProvider, Reply


async def setup(client: Any, kind: str = "openai", flag: bool = True, **configuration: Any) -> dict[str, Any]:
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS[kind], **configuration)
    tool = await add_weather_tool(client, engine["session_id"], requires_approval=flag)
    assert tool["requires_approval"] is flag
    return engine


async def pending(client: Any, sid: str) -> dict[str, Any]:
    """The one pending approval, once it is there."""

    async def one() -> Any:
        body = await (await client.get(f"/api/sessions/{sid}/approvals")).json()
        return body["approvals"][0] if body["approvals"] else None

    await eventually(one, timeout=20)
    return await one()


async def decide(client: Any, sid: str, approval_id: str, expect: int = 200, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/approvals/{approval_id}", json=body)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def command(client: Any, sid: str, cid: str, wait: float = 0) -> dict[str, Any]:
    resp = await client.get(f"/api/sessions/{sid}/commands/{cid}", params={"wait": str(wait)})
    return await resp.json()


async def test_approved_then_it_runs(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await setup(client)
    sid = engine["session_id"]
    fake.script(Reply("Let me check.", tool_calls=[("get_weather", {"location": "Melbourne"})]))
    record = await execute(client, engine["engine_id"], "Weather in Melbourne?", wait=0)
    approval = await pending(client, sid)
    assert approval["tool_name"] == "get_weather" and approval["arguments"] == {"location": "Melbourne"}
    assert approval["command_id"] == record["command_id"] and approval["status"] == "pending"
    waiting = await command(client, sid, record["command_id"])
    assert waiting["status"] == "waiting_approval"
    listed = await (await client.get(f"/api/sessions/{sid}/commands", params={"status": "waiting_approval"})).json()
    assert [c["command_id"] for c in listed["commands"]] == [record["command_id"]]
    seen = await events(client, sid)
    requested = [e for e in seen if e["event_type"] == "ApprovalRequested"]
    assert requested[0]["data"]["approval_id"] == approval["approval_id"]
    assert requested[0]["data"]["arguments"] == {"location": "Melbourne"}
    assert not [e for e in seen if e["event_type"] == "ToolExecuted"]  # nothing ran
    assert len(fake.requests) == 1

    decided = await decide(client, sid, approval["approval_id"], decision="approve")
    assert decided["status"] == "approved" and decided["decided_by"].startswith("key:")
    done = await command(client, sid, record["command_id"], wait=20)
    assert done["status"] == "completed", done
    assert "21" in done["result"]["text"] and "Melbourne" in done["result"]["text"]
    seen = [e["event_type"] for e in await events(client, sid)]
    assert seen.index("ApprovalRequested") < seen.index("ApprovalDecided") < seen.index("ToolExecuted")
    assert seen.index("EngineToolCall") < seen.index("ApprovalRequested")
    # Decided once: a second decision is a conflict, and nothing is pending any more.
    assert_envelope(await decide(client, sid, approval["approval_id"], 409, decision="deny"), "CONFLICT")
    assert (await (await client.get(f"/api/sessions/{sid}/approvals")).json())["approvals"] == []
    every = await (await client.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    assert [a["status"] for a in every["approvals"]] == ["approved"]
    # A purge takes them too (they hold the tool's arguments and the engine's saved state).
    assert (await client.delete(f"/api/sessions/{sid}", params={"purge": "true"})).status == 204
    left = await client.app[BUS].store.fetchall("SELECT COUNT(*) FROM approvals WHERE session_id = ?", (sid,))
    assert left == [(0,)]


async def test_denied_goes_back_to_the_model(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    # Not marked at registration: the engine's configuration asks for it.
    engine = await setup(client, "anthropic", flag=False, require_approval=["get_weather"])
    sid = engine["session_id"]
    # A command cannot lift it: not a per-call parameter.
    refused = await execute(client, engine["engine_id"], "hi", require_approval=False)
    assert refused["status"] == "failed" and refused["error"]["code"] == "VALIDATION_ERROR"
    fake.script(Reply(tool_calls=[("get_weather", {"location": "Oslo"})]))
    record = await execute(client, engine["engine_id"], "Weather in Oslo?", wait=0)
    approval = await pending(client, sid)
    await decide(client, sid, approval["approval_id"], decision="deny", reason="not today")
    done = await command(client, sid, record["command_id"], wait=20)
    assert done["status"] == "completed", done
    assert "denied" in done["result"]["text"] and "not today" in done["result"]["text"]
    assert done["result"]["tool_calls"][0]["is_error"] is True
    assert not [e for e in await events(client, sid) if e["event_type"] == "ToolExecuted"]
    decided = [e for e in await events(client, sid) if e["event_type"] == "ApprovalDecided"][0]["data"]
    assert decided["decision"] == "denied" and decided["reason"] == "not today" and decided["arguments"] is None


async def test_approved_with_edited_arguments(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await setup(client)
    sid = engine["session_id"]
    fake.script(Reply(tool_calls=[("get_weather", {"location": "Melbourne"})]))
    record = await execute(client, engine["engine_id"], "Weather?", wait=0)
    approval = await pending(client, sid)
    bad = await decide(client, sid, approval["approval_id"], 422, decision="approve", arguments={"location": 5})
    assert_envelope(bad, "VALIDATION_ERROR")
    decided = await decide(client, sid, approval["approval_id"], decision="approve", arguments={"location": "Sydney"})
    assert decided["final_arguments"] == {"location": "Sydney"}
    done = await command(client, sid, record["command_id"], wait=20)
    assert "Sydney" in done["result"]["text"] and done["result"]["tool_calls"][0]["arguments"] == {"location": "Sydney"}
    executed = [e for e in await events(client, sid) if e["event_type"] == "ToolExecuted"][0]["data"]
    assert executed["result"] == {"location": "Sydney", "temp_c": 21}


async def test_an_unanswered_request_expires_as_denied(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client(LLMGINE_APPROVAL_TIMEOUT="0.3")
    engine = await setup(client)
    sid = engine["session_id"]
    fake.script(Reply(tool_calls=[("get_weather", {"location": "Perth"})]))
    record = await execute(client, engine["engine_id"], "Weather?", wait=30)
    assert record["status"] == "completed", record
    assert "did not answer in time" in record["result"]["text"]
    every = await (await client.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    approval = every["approvals"][0]
    assert approval["status"] == "expired" and approval["decided_by"] == "daemon"
    assert_envelope(await decide(client, sid, approval["approval_id"], 409, decision="approve"), "CONFLICT")


async def test_cancelled_while_waiting(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client(LLMGINE_TOOLS_REQUIRE_APPROVAL="true")  # every tool, by the setting
    engine = await setup(client, flag=False)
    sid = engine["session_id"]
    fake.script(Reply(tool_calls=[("get_weather", {"location": "Hobart"})]))
    record = await execute(client, engine["engine_id"], "Weather?", wait=0)
    approval = await pending(client, sid)
    resp = await client.post(f"/api/sessions/{sid}/commands/{record['command_id']}/cancel")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "cancelled"
    every = await (await client.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    assert every["approvals"][0]["status"] == "cancelled"
    assert_envelope(await decide(client, sid, approval["approval_id"], 409, decision="approve"), "CONFLICT")
    unknown = "0190a000-0000-7000-8000-000000000000"
    assert_envelope(await decide(client, sid, unknown, 404, decision="approve"), "NOT_FOUND")
    assert_envelope(await decide(client, unknown, unknown, 404, decision="deny"), "SESSION_NOT_FOUND")
    assert_envelope(await decide(client, sid, approval["approval_id"], 422, decision="maybe"), "VALIDATION_ERROR")
    resp = await client.get(f"/api/sessions/{sid}/approvals", params={"status": "odd"})
    assert resp.status == 422
    # The session goes on: the next command runs.
    fake.script(Reply("fine"))
    assert (await execute(client, engine["engine_id"], "hello"))["status"] == "completed"


async def test_a_cancel_while_the_request_is_written_withdraws_it(llm_client: Any, fake: FakeProvider) -> None:
    """Cancelled as soon as the engine said it waits (its EngineStatusUpdate is written just
    before the request): the answer was ``cancelled``, but the request's write went on and
    nothing withdrew it: the command stayed ``waiting_approval`` in the store and its request
    ``pending`` for good (approving it then left the command ``executing`` with nothing
    running; a restart ran it again)."""
    client = await llm_client(LLMGINE_TOOLS_REQUIRE_APPROVAL="true")
    engine = await setup(client, flag=False)
    sid = engine["session_id"]
    store = client.app[BUS].store
    said = "SELECT 1 FROM events WHERE session_id = ? AND event_type = 'EngineStatusUpdate' AND data LIKE ?"
    for _ in range(5):
        fake.script(Reply(tool_calls=[("get_weather", {"location": "Hobart"})]))
        cid = (await execute(client, engine["engine_id"], "Weather?", wait=0))["command_id"]
        await eventually(lambda cid=cid: store.fetchall(said, (sid, f"%{cid}%waiting_approval%")), interval=0)
        resp = await client.post(f"/api/sessions/{sid}/commands/{cid}/cancel")
        assert resp.status == 200 and (await resp.json())["status"] == "cancelled", await resp.text()

        async def settled(cid: str = cid) -> bool:
            stored = await store.fetchall("SELECT status FROM commands WHERE command_id = ?", (cid,))
            requests = await store.fetchall("SELECT status FROM approvals WHERE command_id = ?", (cid,))
            return stored == [("cancelled",)] and all(r == ("cancelled",) for r in requests)

        await eventually(settled, message="the command cancelled in the store, its request withdrawn")


async def test_a_decision_on_another_node_wakes_the_waiting_command(
    fake: FakeProvider, pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Two nodes on one PostgreSQL database: the command waits on the node that runs it, the
    decision is made on the other. It waited until the approval expired (600 s by default):
    only a decision made on its own node woke it."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name, **provider_env(fake)) for name in "ab"]
    engine = await setup(a)
    sid = engine["session_id"]
    fake.script(Reply(tool_calls=[("get_weather", {"location": "Darwin"})]))
    record = await execute(a, engine["engine_id"], "Weather?", wait=0)
    approval = await pending(b, sid)
    await decide(b, sid, approval["approval_id"], decision="approve")

    async def ended() -> dict[str, Any] | None:
        now = await command(b, sid, record["command_id"], wait=1)
        return now if now["status"] not in ("waiting_approval", "executing") else None

    done = await eventually(ended, message="the command to go on after the decision")
    assert done["status"] == "completed" and "Darwin" in done["result"]["text"], done
