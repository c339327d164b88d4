"""Observability of user code and engines (issue 8): traces, metrics and logs of handlers,
tools, event handlers and LLM calls, with real worker processes."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from tests.api.llm_helpers import create_llm_engine, execute
from tests.api.test_observability import get_json, scrape
from tests.conftest import create_session
from tests.eventually import eventually
from tests.fakes.provider import FakeProvider, Reply

LOOKUP = textwrap.dedent('''
    def lookup(key: str) -> dict:
        """Look a key up."""
        bus.log("info", f"looking up {key}")
        return {"key": key, "value": len(key)}
''')
HANDLER = textwrap.dedent("""
    async def handle(command):
        bus.log("warning", "handler calling the tool")
        found = await bus.call_tool("lookup", {"key": command.parameters["key"]})
        return {"found": found}
""")


def shape(nodes: list[dict[str, Any]]) -> list[Any]:
    """The span tree as (name, [children]), without the storage commits (their number depends
    on how the group commit batched the writes)."""
    return [(n["name"], shape(n["children"])) for n in nodes if n["name"] != "store.commit"]


def spans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        out.append(node)
        out.extend(spans(node["children"]))
    return out


async def setup(client) -> str:
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "lookup", "function_code": LOOKUP})
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/commands", json={"command_type": "Lookup", "handler_function": HANDLER}
    )
    assert resp.status == 201, await resp.text()
    return sid


async def test_one_command_through_a_handler_and_a_tool_is_one_trace(app_client):
    sid = await setup(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Lookup", "parameters": {"key": "abc"}}
    )
    record = await resp.json()
    assert record["status"] == "completed", record
    assert record["result"] == {"found": {"key": "abc", "value": 3}}

    trace = await get_json(app_client, f"/api/observability/traces/{record['trace_id']}")
    assert shape(trace["spans"]) == [
        (
            "POST /api/sessions/{session_id}/commands",
            [
                ("command.queue_wait", []),
                (
                    "command.run",
                    [
                        (
                            "handler.run",
                            [
                                ("tool.call", []),
                            ],
                        ),
                    ],
                ),
            ],
        ),
    ]
    # Storage commits are leaves wherever they hang.
    assert all(not s["children"] for s in spans(trace["spans"]) if s["name"] == "store.commit")
    by_name = {s["name"]: s for s in spans(trace["spans"])}
    run, handler, tool = by_name["command.run"], by_name["handler.run"], by_name["tool.call"]
    wait = by_name["command.queue_wait"]
    assert wait["attributes"]["command_id"] == record["command_id"]
    assert wait["offset_ms"] <= run["offset_ms"]  # the wait comes before the run
    assert run["attributes"]["command_type"] == "Lookup" and run["attributes"]["command_id"] == record["command_id"]
    assert handler["attributes"]["function"] == "handle" and handler["attributes"]["session_id"] == sid
    assert tool["attributes"]["tool"] == "lookup" and tool["attributes"]["depth"] == 1
    assert tool["attributes"]["command_id"] == record["command_id"]
    # Children start after and end before their parents.
    for parent, child in ((run, handler), (handler, tool)):
        assert parent["offset_ms"] <= child["offset_ms"]
        assert child["offset_ms"] + child["duration_ms"] <= parent["offset_ms"] + parent["duration_ms"] + 1.0


async def test_failures_mark_their_spans(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/commands",
        json={"command_type": "Boom", "handler_function": "def boom(c):\n    raise ValueError('no')\n"},
    )
    assert resp.status == 201
    record = await (
        await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Boom"})
    ).json()
    assert record["status"] == "failed"
    trace = await get_json(app_client, f"/api/observability/traces/{record['trace_id']}")
    by_name = {s["name"]: s for s in spans(trace["spans"])}
    assert by_name["handler.run"]["status"] == "error"
    assert "ValueError: no" in by_name["handler.run"]["error"]
    assert by_name["command.run"]["status"] == "error"


async def test_bus_log_lands_in_the_logs_with_its_session(app_client):
    sid = await setup(app_client)
    record = await (
        await app_client.post(
            f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Lookup", "parameters": {"key": "k"}}
        )
    ).json()
    assert record["status"] == "completed"
    # A tool run over the API, outside any command, logs with its session too.
    out = await (
        await app_client.post(f"/api/sessions/{sid}/tools/lookup/execute", json={"arguments": {"key": "direct"}})
    ).json()
    assert out["error"] is None
    logs = (await get_json(app_client, f"/api/observability/logs?session_id={sid}&level=debug"))["logs"]
    mine = {r["message"]: r for r in logs if r["source"] in ("handler", "tool")}
    handler_log = mine["handler calling the tool"]
    assert handler_log["level"] == "warning" and handler_log["source"] == "handler"
    assert handler_log["command_id"] == record["command_id"] and handler_log["trace_id"] == record["trace_id"]
    assert handler_log["metadata"]["kind"] == "command" and handler_log["metadata"]["name"] == "Lookup"
    in_command = mine["looking up k"]
    assert in_command["source"] == "tool" and in_command["command_id"] == record["command_id"]
    direct = mine["looking up direct"]
    assert direct["source"] == "tool" and direct["session_id"] == sid and direct["command_id"] is None
    assert direct["metadata"]["call_id"] == out["call_id"]
    # level filtering applies to them like to any record
    warnings = (await get_json(app_client, f"/api/observability/logs?session_id={sid}&level=warning"))["logs"]
    assert [r["message"] for r in warnings if r["source"] != "daemon"] == ["handler calling the tool"]


async def test_sandbox_and_event_handler_metrics_move(app_client):
    sid = await setup(app_client)
    before = await scrape(app_client)
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events",
        json={"event_type": "Ping", "handler_function": "def on_ping(event):\n    pass\n"},
    )
    assert resp.status == 201
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events",
        json={"event_type": "Ping", "handler_function": "def broken(event):\n    raise KeyError(1)\n"},
    )
    assert resp.status == 201
    published = await (
        await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "Ping", "data": {}})
    ).json()
    record = await (
        await app_client.post(
            f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Lookup", "parameters": {"key": "m"}}
        )
    ).json()
    assert record["status"] == "completed"
    await app_client.post(
        f"/api/sessions/{sid}/tools",
        json={"name": "spin", "function_code": "def spin():\n    while True:\n        pass\n"},
    )
    out = await (
        await app_client.post(f"/api/sessions/{sid}/tools/spin/execute", json={"arguments": {}, "timeout": 0.3})
    ).json()
    assert out["error"]["code"] == "TIMEOUT"
    key = ("llmgine_event_handler_runs_total", (("outcome", "error"), ("type", "Ping")))

    async def scraped():
        metrics = await scrape(app_client)
        return metrics if metrics.get(key) else None

    after = await eventually(scraped, interval=0.05, message=str(key))

    def moved(name: str, **labels: str) -> float:
        k = (name, tuple(sorted(labels.items())))
        return after.get(k, 0) - before.get(k, 0)

    assert moved("llmgine_sandbox_calls_total", kind="command", outcome="ok") == 1
    assert moved("llmgine_sandbox_calls_total", kind="tool", outcome="ok") == 1
    assert moved("llmgine_sandbox_calls_total", kind="tool", outcome="timeout") == 1
    assert moved("llmgine_sandbox_calls_total", kind="event", outcome="ok") >= 1
    assert moved("llmgine_sandbox_call_duration_seconds_count", kind="tool") == 2
    assert moved("llmgine_event_handler_runs_total", type="Ping", outcome="ok") == 1
    assert moved("llmgine_event_handler_runs_total", type="Ping", outcome="error") == 1
    states = {dict(labels)["state"] for name, labels in after if name == "llmgine_sandbox_workers"}
    assert states == {"busy", "idle"}

    # The event handlers ran in the trace of the request that published the event.
    trace = await get_json(app_client, f"/api/observability/traces/{published['trace_id']}")
    runs = [s for s in spans(trace["spans"]) if s["name"] == "event_handler.run"]
    assert sorted(s["status"] for s in runs) == ["error", "ok"]
    assert all(s["attributes"]["event_type"] == "Ping" for s in runs)


async def test_llm_calls_are_traced_and_counted(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine")
    sid = engine["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "lookup", "function_code": LOOKUP})
    assert resp.status == 201
    before = await scrape(client)
    fake.script(Reply("Checking.", tool_calls=[("lookup", {"key": "xyz"})]))
    record = await execute(client, engine["engine_id"], "look xyz up")
    assert record["status"] == "completed", record
    trace = await get_json(client, f"/api/observability/traces/{record['trace_id']}")
    assert shape(trace["spans"]) == [
        (
            "POST /api/engines/{engine_id}/execute",
            [
                ("command.queue_wait", []),
                (
                    "command.run",
                    [
                        (
                            "engine.run",
                            [
                                ("llm.call", []),
                                ("tool.call", []),
                                ("llm.call", []),
                            ],
                        ),
                    ],
                ),
            ],
        ),
    ]
    calls = [s for s in spans(trace["spans"]) if s["name"] == "llm.call"]
    assert [c["attributes"]["round"] for c in calls] == [0, 1]
    assert calls[0]["attributes"]["provider"] == "openai" and calls[0]["attributes"]["model"] == "gpt-4o-mini"
    assert calls[0]["attributes"]["finish_reason"] == "tool_calls"
    assert calls[0]["attributes"]["engine_id"] == engine["engine_id"]

    after = await scrape(client)
    labels = (("model", "gpt-4o-mini"), ("outcome", "ok"), ("provider", "openai"))
    assert after[("llmgine_llm_calls_total", labels)] - before.get(("llmgine_llm_calls_total", labels), 0) == 2
    usage = record["result"]["usage"]
    for kind in ("prompt", "completion"):
        key = ("llmgine_llm_tokens_total", (("kind", kind), ("model", "gpt-4o-mini"), ("provider", "openai")))
        assert after.get(key, 0) - before.get(key, 0) == usage[f"{kind}_tokens"]
    count = ("llmgine_llm_call_duration_seconds_count", (("model", "gpt-4o-mini"), ("provider", "openai")))
    assert after[count] - before.get(count, 0) == 2


async def test_bus_log_has_a_budget_per_call_and_one_line_per_record(app_client):
    sid = (await (await app_client.post("/api/sessions", json={})).json())["session_id"]
    code = (
        "def chatty():\n"
        "    bus.log('info', 'first\\nFORGED CRITICAL llmgine.auth: key rotated')\n"
        "    for i in range(1500):\n"
        "        bus.log('info', f'noise {i}')\n"
        "    return 'done'\n"
    )
    resp = await app_client.post(f"/api/sessions/{sid}/tools", json={"name": "chatty", "function_code": code})
    assert resp.status == 201, await resp.text()
    out = await (await app_client.post(f"/api/sessions/{sid}/tools/chatty/execute", json={"arguments": {}})).json()
    assert out["result"] == "done", out
    base = f"/api/observability/logs?session_id={sid}&level=debug&limit=1000"
    forged = (await get_json(app_client, base + "&q=FORGED"))["logs"]
    assert [r["message"] for r in forged] == ["first\\nFORGED CRITICAL llmgine.auth: key rotated"]
    noise = (await get_json(app_client, base + "&q=noise"))["logs"]
    assert len(noise) == 999  # 1000 records kept, the first one included
    budget = (await get_json(app_client, base + "&q=budget"))["logs"]
    assert len(budget) == 1 and "reached its budget" in budget[0]["message"]


async def test_a_nul_in_a_log_or_an_error_loses_no_ones_telemetry(app_client):
    """PostgreSQL's text holds no NUL: one record or span with one (user code's bus.log, the
    error its tool raised, a client's message) failed the whole flush, and every session's
    buffered logs and spans went with it. Both backends now keep it written ``\\x00``, as the
    log file writes it."""
    victim = (await create_session(app_client))["session_id"]
    attacker = (await create_session(app_client))["session_id"]
    code = {
        victim: "def f():\n    bus.log('info', 'the victim was here')\n",
        attacker: "def f():\n    bus.log('info', 'a\\x00b')\n    raise ValueError('x\\x00y')\n",
    }
    for sid, source in code.items():
        resp = await app_client.post(f"/api/sessions/{sid}/tools", json={"name": "f", "function_code": source})
        assert resp.status == 201, await resp.text()
    responses = await asyncio.gather(
        *(app_client.post(f"/api/sessions/{sid}/tools/f/execute", json={"arguments": {}}) for sid in code)
    )
    trace_id = responses[1].headers["traceparent"].split("-")[1]
    assert (await responses[1].json())["error"]["details"]["message"] == "x\x00y"  # the answer keeps it

    async def stored() -> bool:
        logs = (await get_json(app_client, "/api/observability/logs?limit=1000"))["logs"]
        if not {"the victim was here", "a\\x00b"} <= {r["message"] for r in logs}:
            return False
        resp = await app_client.get(f"/api/observability/traces/{trace_id}")
        trace = await resp.json() if resp.status == 200 else {"spans": []}
        return any("x\\x00y" in (s["error"] or "") for s in spans(trace["spans"]))

    await eventually(stored, message="every record and span stored")
    # A client's record (POST .../logs wrote it at once, with whatever was buffered: a 500).
    resp = await app_client.post("/api/observability/logs", json={"message": "c\x00d", "logger": "l\x00"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["message"] == "c\\x00d"
