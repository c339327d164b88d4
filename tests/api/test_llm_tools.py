"""ToolChatEngine: the model calls the session's tools, run in the sandbox, round trips.

Needs the tools API (sandbox); skipped until it is merged into this branch.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.llm_helpers import MODELS, create_llm_engine, engine_events, execute, messages
from tests.fakes.provider import FakeProvider, Reply

KINDS = ["openai", "anthropic"]
WEATHER = '''
def get_weather(location: str) -> dict:
    """Weather for a city."""
    return {"location": location, "temp_c": 21}
'''


async def tool_engine(client: Any, kind: str, **configuration: Any) -> dict[str, Any]:
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS[kind], **configuration)
    resp = await client.post(
        f"/api/sessions/{engine['session_id']}/tools",
        json={
            "name": "get_weather",
            "description": "Get weather information for a location",
            "parameters": {"location": {"type": "string", "description": "City name"}},
            "function_code": WEATHER,
        },
    )
    assert resp.status == 201, await resp.text()
    return engine


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_round_trip_through_the_sandbox(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    client = await llm_client()
    engine = await tool_engine(client, kind)
    fake.script(Reply("Let me check.", tool_calls=[("get_weather", {"location": "Melbourne"})]))
    record = await execute(client, engine["engine_id"], "Weather in Melbourne?")
    assert record["status"] == "completed", record
    result = record["result"]
    assert result["tool_rounds"] == 1
    assert result["text"].startswith("tool said: ") and "Melbourne" in result["text"] and "21" in result["text"]
    assert [c["tool_name"] for c in result["tool_calls"]] == ["get_weather"]
    first, second = fake.requests[0].body, fake.requests[1].body
    offered = str(first["tools"])
    assert "get_weather" in offered and "location" in offered
    assert "21" in str(second["messages"])  # the tool's result went back to the model

    seen = await engine_events(client, engine["session_id"])
    types = [t for t, _ in seen]
    assert types.index("EngineToolCall") < types.index("ToolExecuted") < types.index("EngineResponse")
    executed = dict(seen)["ToolExecuted"]
    assert executed["result"] == {"location": "Melbourne", "temp_c": 21}
    statuses = [d["status"] for t, d in seen if t == "EngineStatusUpdate"]
    assert statuses == ["processing", "calling_llm", "executing_tools", "calling_llm", "completed"]

    stored = await messages(client, engine["engine_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["name"] == "get_weather"
    assert stored[2]["tool_call_id"] == stored[1]["tool_calls"][0]["id"]
    # The next prompt replays the whole round (valid for the provider: each call has its result).
    assert (await execute(client, engine["engine_id"], "thanks"))["status"] == "completed"


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_errors_go_back_to_the_model(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    client = await llm_client()
    engine = await tool_engine(client, kind)
    fake.script(Reply(tool_calls=[("no_such_tool", {})]))
    record = await execute(client, engine["engine_id"], "go")
    assert record["status"] == "completed"
    assert "TOOL_NOT_FOUND" in record["result"]["text"]
    assert record["result"]["tool_calls"][0]["is_error"] is True
    fake.script(Reply(tool_calls=[("get_weather", {})], raw_arguments='{"location": '))
    record = await execute(client, engine["engine_id"], "again")
    assert "not a JSON object" in record["result"]["text"]


async def test_max_tool_rounds_stops_the_loop(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await tool_engine(client, "openai", max_tool_rounds=2)
    fake.script(*[Reply("again", tool_calls=[("get_weather", {"location": "Oslo"})])] * 5)
    record = await execute(client, engine["engine_id"], "loop")
    assert record["result"]["finish_reason"] == "max_tool_rounds" and record["result"]["tool_rounds"] == 2
    assert len(fake.requests) == 3
    stored = await messages(client, engine["engine_id"])
    # The unexecuted third round's calls are not stored (no call without its result).
    assert stored[-1] == {**stored[-1], "role": "assistant", "content": "again", "tool_calls": None}


AGAIN = 'async def again() -> dict:\n    return await bus.execute("ToolChatEngineCommand", {"prompt": "again"})\n'


async def test_a_tool_the_model_calls_runs_at_its_command_s_depth(llm_client: Any, fake: FakeProvider) -> None:
    """A tool whose code executes its engine's command again (bus.execute): the engine ran
    every tool at depth 0, however deep its command, so each round went past
    ``sandbox.max_depth`` and its tool waited for the session's share of the pool, held by
    the tool waiting for it: the whole chain hung until its timeout. Now the tool runs at its
    command's depth: the chain stops at the limit and every command ends."""
    client = await llm_client(LLMGINE_SANDBOX_MAX_DEPTH="2")
    # Depth 0, 1 and 2 call the tool; at 2 its bus.execute is refused (twice); then answers.
    fake.script(*[Reply(tool_calls=[("again", {})])] * 4, *[Reply("done")] * 3)
    engine = await create_llm_engine(client, engine_type="ToolChatEngine")
    sid = engine["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "again", "function_code": AGAIN})
    assert resp.status == 201, await resp.text()
    record = await execute(client, engine["engine_id"], "go", wait=30)
    assert record["status"] == "completed", record
    resp = await client.get(f"/api/sessions/{sid}/commands", params={"limit": "100"})
    commands = (await resp.json())["commands"]
    assert sorted(c["metadata"].get("_depth", 0) for c in commands) == [0, 1, 2]
    assert {c["status"] for c in commands} == {"completed"}
    refused = [e for t, e in await engine_events(client, sid) if t == "ToolExecuted" and e.get("error")]
    assert refused and all("depth limit" in e["error"]["message"] for e in refused), refused
