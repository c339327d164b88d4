"""Helpers for the LLM engine tests: a daemon app whose providers point at the fake provider."""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import events
from tests.conftest import create_session
from tests.fakes.provider import FakeProvider

MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-3-5-haiku-latest"}


def provider_env(fake: FakeProvider, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.root_url,  # the Anthropic SDK's convention: no /v1
        "ANTHROPIC_API_KEY": "test-key",
        # Retries are tested with Retry-After: 0; keep the budget small everywhere else.
        "LLMGINE_OPENAI_MAX_RETRIES": "2",
        "LLMGINE_ANTHROPIC_MAX_RETRIES": "2",
        **extra,
    }


async def create_llm_engine(
    client: Any,
    sid: str | None = None,
    *,
    engine_type: str = "SinglePassEngine",
    model: str | None = MODELS["openai"],
    expect: int = 201,
    **configuration: Any,
) -> dict[str, Any]:
    if sid is None:
        sid = (await create_session(client))["session_id"]
    body: dict[str, Any] = {"engine_type": engine_type, "session_id": sid, "configuration": configuration}
    if model is not None:
        body["model_name"] = model
    resp = await client.post("/api/engines", json=body)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def execute(
    client: Any,
    engine_id: str,
    prompt: str,
    *,
    wait: float = 30,
    metadata: dict[str, Any] | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    resp = await client.post(
        f"/api/engines/{engine_id}/execute",
        params={"wait": str(wait)},
        json={"prompt": prompt, "parameters": parameters, "metadata": metadata or {}},
    )
    assert resp.status in (200, 202), await resp.text()
    return await resp.json()


async def messages(client: Any, engine_id: str, expect: int = 200) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/engines/{engine_id}/messages")
    assert resp.status == expect, await resp.text()
    return (await resp.json())["messages"] if expect == 200 else []


async def engine_events(client: Any, sid: str, command_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(event_type, data) of the session's events from engines and commands, in seq order."""
    found = []
    for event in await events(client, sid):
        data = event["data"]
        if command_id is not None and data.get("command_id") != command_id:
            continue
        found.append((event["event_type"], data))
    return found


WEATHER_TOOL = 'def get_weather(location: str) -> dict:\n    return {"location": location, "temp_c": 21}\n'


async def add_weather_tool(client: Any, sid: str, **extra: Any) -> dict[str, Any]:
    """get_weather(location) -> {location, temp_c: 21} in the session (``extra``: more fields
    of the registration, e.g. requires_approval)."""
    resp = await client.post(
        f"/api/sessions/{sid}/tools",
        json={
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"location": {"type": "string"}},
            "function_code": WEATHER_TOOL,
            **extra,
        },
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()
