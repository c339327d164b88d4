"""Token usage and estimated cost (bus/usage.py): recorded per model call on the command's
row, summed per command, batch, engine and session, and reported by GET /api/usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, execute
from tests.conftest import assert_envelope
from tests.fakes.provider import FakeProvider, Reply

# USD per million tokens: input, output, cached input (large, so sums are easy to read).
PRICES = {"gpt-4o-mini": [1000.0, 2000.0, 100.0]}


def cost(prompt: int, completion: int, cached: int) -> float:
    return ((prompt - cached) * 1000 + cached * 100 + completion * 2000) / 1e6


async def priced_client(llm_client: Any) -> Any:
    return await llm_client(LLMGINE_PRICES=json.dumps(PRICES))


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_toolchat_conversation_sums_its_calls(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    client = await priced_client(llm_client)
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS[kind])
    await add_weather_tool(client, engine["session_id"])
    fake.script(
        Reply("checking", tool_calls=[("get_weather", {"location": "Oslo"})], usage=(100, 10), cached=40),
        Reply("21 degrees", usage=(150, 20), cached=100),
    )
    record = await execute(client, engine["engine_id"], "weather?")
    assert record["status"] == "completed", record
    usage = record["usage"]
    assert usage["prompt_tokens"] == 250 and usage["completion_tokens"] == 30 and usage["cached_tokens"] == 140
    assert usage["total_tokens"] == 280 and usage["commands"] == 1
    if kind == "openai":  # priced: gpt-4o-mini is in the configured table
        assert usage["cost_usd"] == pytest.approx(cost(100, 10, 40) + cost(150, 20, 100))
        assert usage["unpriced_tokens"] == 0
    else:  # claude-3-5-haiku-latest: the built-in table has claude-3-5-haiku (longest prefix)
        assert usage["cost_usd"] == pytest.approx((110 * 0.8 + 140 * 0.08 + 30 * 4.0) / 1e6)
    assert record["result"]["usage"]["cached_tokens"] == 140
    # The stored row says the same (GET, not the live record).
    got = await (await client.get(f"/api/sessions/{engine['session_id']}/commands/{record['command_id']}")).json()
    assert got["usage"] == usage


async def test_batch_engine_session_and_report_totals(llm_client: Any, fake: FakeProvider) -> None:
    client = await priced_client(llm_client)
    priced = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS["openai"])
    sid = priced["session_id"]
    unpriced = await create_llm_engine(client, sid, model="openai/no-such-price-model")
    await add_weather_tool(client, sid)
    fake.script(
        Reply("a", usage=(10, 1)),
        Reply("b", usage=(20, 2), cached=10),
        Reply("c", usage=(30, 3)),
    )
    resp = await client.post(
        f"/api/sessions/{sid}/commands/batch",
        params={"wait": "30"},
        json={
            "mode": "sequential",
            "commands": [
                {"command_type": "ToolChatEngineCommand", "parameters": {"prompt": "one"}},
                {"command_type": "ToolChatEngineCommand", "parameters": {"prompt": "two"}},
            ],
        },
    )
    assert resp.status == 200, await resp.text()
    batch = await resp.json()
    assert [c["status"] for c in batch["commands"]] == ["completed", "completed"]
    assert batch["usage"]["prompt_tokens"] == 30 and batch["usage"]["completion_tokens"] == 3
    assert batch["usage"]["commands"] == 2
    assert batch["usage"]["cost_usd"] == pytest.approx(cost(10, 1, 0) + cost(20, 2, 10))
    resp = await client.get(f"/api/sessions/{sid}/batches/{batch['batch_id']}")
    assert (await resp.json())["usage"] == batch["usage"]

    # A model without a price: tokens, no cost.
    record = await execute(client, unpriced["engine_id"], "three")
    assert record["usage"]["cost_usd"] is None and record["usage"]["unpriced_tokens"] == 33

    engine = await (await client.get(f"/api/engines/{priced['engine_id']}")).json()
    assert engine["usage"]["prompt_tokens"] == 30 and engine["usage"]["commands"] == 2
    session = await (await client.get(f"/api/sessions/{sid}")).json()
    assert session["usage"]["prompt_tokens"] == 60 and session["usage"]["commands"] == 3
    assert session["usage"]["cost_usd"] == pytest.approx(batch["usage"]["cost_usd"])
    assert session["usage"]["unpriced_tokens"] == 33

    report = await (await client.get("/api/usage", params={"session_id": sid, "by": "model"})).json()
    assert report["total"] == session["usage"]
    groups = {g["key"]: g["usage"] for g in report["groups"]}
    assert groups["openai/gpt-4o-mini"]["prompt_tokens"] == 30
    assert groups["openai/no-such-price-model"]["cost_usd"] is None
    report = await (await client.get("/api/usage", params={"by": "engine"})).json()
    assert {g["key"] for g in report["groups"]} == {priced["engine_id"], unpriced["engine_id"]}
    report = await (await client.get("/api/usage", params={"since": "2999-01-01T00:00:00Z"})).json()
    assert report["total"]["commands"] == 0 and report["total"]["cost_usd"] is None
    resp = await client.get("/api/usage", params={"by": "day"})
    assert resp.status == 422

    metrics = await (await client.get("/metrics")).text()
    assert 'llm_tokens_total{kind="cached",model="gpt-4o-mini",provider="openai"} 10' in metrics.replace(".0", "")
    assert "llm_cost_usd_total" in metrics


async def test_the_report_of_an_unknown_session_is_404(app_client: Any) -> None:
    # As GET /api/observability/metrics?session_id= says: a session that is not there has no
    # report of zeros (a mistyped id would look like a session that never called a model).
    resp = await app_client.get("/api/usage", params={"session_id": "01a24c5f-0000-7000-8000-000000000000"})
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    sid = (await (await app_client.post("/api/sessions", json={})).json())["session_id"]
    report = await (await app_client.get("/api/usage", params={"session_id": sid})).json()
    assert report["total"]["commands"] == 0
