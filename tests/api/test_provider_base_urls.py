"""Provider base URLs as the providers' SDKs define them (engines/providers/urls.py):
``OPENAI_BASE_URL`` includes ``/v1``, ``ANTHROPIC_BASE_URL`` does not; the other form works
too, with one warning at start-up. Against our fake provider and against fakellm, an
OpenAI/Anthropic-compatible mock server nobody here wrote (tests/fakes/fakellm.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from llmgine_daemon.engines.providers.urls import base_url_warning, endpoint

from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, execute
from tests.fakes.fakellm import FakeLLM
from tests.fakes.provider import FakeProvider, Reply


@pytest.mark.parametrize(
    "kind, base, expected, warns",
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions", False),
        ("openai", "http://h:1/v1/", "http://h:1/v1/chat/completions", False),
        ("openai", "http://h:1", "http://h:1/v1/chat/completions", True),
        ("openai", "http://h:1/", "http://h:1/v1/chat/completions", True),
        ("openai", "https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/chat/completions", False),
        ("openai", "http://proxy/openai", "http://proxy/openai/chat/completions", False),
        ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1/messages", False),
        ("anthropic", "http://h:1/", "http://h:1/v1/messages", False),
        ("anthropic", "http://h:1/v1", "http://h:1/v1/messages", True),
        ("anthropic", "http://proxy/anthropic", "http://proxy/anthropic/v1/messages", False),
        ("anthropic", "http://proxy/anthropic/v1/", "http://proxy/anthropic/v1/messages", True),
    ],
)
def test_endpoints_follow_each_sdk(kind: str, base: str, expected: str, warns: bool) -> None:
    assert endpoint(kind, base) == expected
    warning = base_url_warning(kind, kind, base, "X_BASE_URL")
    assert (warning is not None) == warns
    if warning:
        assert "X_BASE_URL" in warning and expected in warning


def forms(fake_root: str) -> list[tuple[str, str, str, bool]]:
    """(kind, variable, value, warned) for each provider in each form."""
    return [
        ("openai", "OPENAI_BASE_URL", fake_root + "/v1", False),  # the SDK's form
        ("openai", "OPENAI_BASE_URL", fake_root, True),
        ("anthropic", "ANTHROPIC_BASE_URL", fake_root, False),  # the SDK's form
        ("anthropic", "ANTHROPIC_BASE_URL", fake_root + "/v1", True),
    ]


async def ask_in_each_form(
    make_client: Any, caplog: pytest.LogCaptureFixture, root: str, tool_loop: bool = False
) -> list[dict[str, Any]]:
    results = []
    for n, (kind, var, value, warned) in enumerate(forms(root)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmgine.providers"):
            client = await make_client(**{var: value, "OPENAI_API_KEY": "test-key", "ANTHROPIC_API_KEY": "test-key"})
        warnings = [r.getMessage() for r in caplog.records if r.name == "llmgine.providers"]
        assert bool([w for w in warnings if var in w]) == warned, (var, value, warnings)
        engine = await create_llm_engine(
            client, engine_type="ToolChatEngine" if tool_loop else "SinglePassEngine", model=MODELS[kind]
        )
        if tool_loop:
            await add_weather_tool(client, engine["session_id"])
        record = await execute(client, engine["engine_id"], f"What is the weather in Melbourne? (run {n})")
        assert record["status"] == "completed", (var, value, record)
        results.append(record["result"])
        await client.close()  # one app on the home's database at a time (store/db.py's lock)
    return results


async def test_both_forms_reach_our_fake(
    make_client: Any, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(*[Reply("hello")] * 4)
    results = await ask_in_each_form(make_client, caplog, fake.root_url)
    assert [r["text"] for r in results] == ["hello"] * 4
    assert [r.api for r in fake.requests] == ["openai", "openai", "anthropic", "anthropic"]


async def test_both_forms_reach_fakellm_with_a_tool_loop(
    make_client: Any, fakellm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    """A third-party server: streamed answers and a tool round on both wire formats."""
    results = await ask_in_each_form(make_client, caplog, fakellm.root_url, tool_loop=True)
    for result in results:
        assert result["tool_rounds"] == 1, result
        assert [c["tool_name"] for c in result["tool_calls"]] == ["get_weather"]
        assert result["text"] == "It is 21 degrees in Melbourne."
    paths = fakellm.paths()
    assert paths == {"/v1/chat/completions": 4, "/v1/messages": 4}, paths


@pytest.fixture
def fakellm(tmp_path: Any) -> Any:
    with FakeLLM(tmp_path) as server:
        yield server
