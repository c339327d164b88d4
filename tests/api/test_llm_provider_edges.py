"""LLM engines against a provider that misbehaves at the edges of its wire format: answers
whose JSON is valid but of the wrong shape, errors that quote the API key, settings the
provider's own API refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.llm_helpers import MODELS, create_llm_engine, engine_events, execute, messages
from tests.fakes.provider import FakeProvider, Raw

KINDS = ["openai", "anthropic"]


def sse(*events: Any) -> bytes:
    return b"".join(f"data: {e if e == '[DONE]' else json.dumps(e)}\n\n".encode() for e in events)


OPENAI_CHUNK = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
ANTHROPIC_START = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}

# Valid JSON, valid SSE, but not the shape the API documents.
MISSHAPEN = {
    "openai": [
        sse({**OPENAI_CHUNK, "choices": ["x"]}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": "text"}]}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": {"content": 5}}]}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": None}]}}]}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": {"tool_calls": "x"}}]}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [], "usage": {"prompt_tokens": "many"}}, "[DONE]"),
        sse({**OPENAI_CHUNK, "choices": [], "usage": {"prompt_tokens_details": {"cached_tokens": "x"}}}, "[DONE]"),
    ],
    "anthropic": [
        sse({"type": "message_start", "message": "x"}, {"type": "message_stop"}),
        sse(ANTHROPIC_START, {"type": "content_block_start", "index": 0, "content_block": "x"}),
        sse(
            ANTHROPIC_START,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
            {"type": "message_stop"},
        ),
        sse(ANTHROPIC_START, {"type": "message_delta", "delta": "x"}),
        sse(ANTHROPIC_START, {"type": "error", "error": "overloaded"}),
    ],
}


@pytest.mark.parametrize(
    "kind, body", [(kind, body) for kind, bodies in MISSHAPEN.items() for body in bodies], ids=lambda v: str(v)[:40]
)
async def test_a_misshapen_stream_is_a_bad_response(
    llm_client: Any, fake: FakeProvider, kind: str, body: bytes
) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind])
    fake.script(Raw(body))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "failed"
    assert record["error"]["code"] == "PROVIDER_BAD_RESPONSE", record["error"]
    assert record["error"]["details"]["provider"] == kind
    assert "traceback" not in record["error"]["details"]
    assert all(
        isinstance(d["text"], str)
        for t, d in await engine_events(client, engine["session_id"])
        if t == "EngineResponseDelta"
    )
    seen = await engine_events(client, engine["session_id"], record["command_id"])
    assert [d["status"] for t, d in seen if t == "EngineStatusUpdate"][-1] == "failed"
    assert await messages(client, engine["engine_id"]) == []


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"message": "hi", "finish_reason": "stop"}]},
        {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "many"}},
        {"choices": [{"message": {"content": "hi", "tool_calls": ["x"]}}]},
    ],
)
async def test_a_misshapen_json_answer_is_a_bad_response(
    llm_client: Any, fake: FakeProvider, body: dict[str, Any]
) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client)
    fake.script(Raw(json.dumps(body).encode(), content_type="application/json"))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "failed"
    assert record["error"]["code"] == "PROVIDER_BAD_RESPONSE", record["error"]
