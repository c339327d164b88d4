"""LLM engines against a provider that misbehaves at the edges of its wire format: answers
whose JSON is valid but of the wrong shape, errors that quote the API key, settings the
provider's own API refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS

from tests.api.bus_helpers import finished
from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, engine_events, execute, messages
from tests.conftest import assert_envelope, create_session
from tests.eventually import eventually
from tests.fakes.provider import Fail, FakeProvider, Hang, Raw, Reply, Reset, Stall

KINDS = ["openai", "anthropic"]
MAX_ANSWER_CHARS = 4_000_000  # engines/providers/base.py's


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


async def everything_said(client: Any, record: dict[str, Any], sid: str) -> str:
    """The command, its session's events and the daemon's own log lines, as text."""
    logs = await (await client.get("/api/logs", params={"limit": 1000})).text()
    return json.dumps(record) + json.dumps(await engine_events(client, sid)) + logs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [401, 400, 500])
async def test_a_provider_quoting_the_api_key_does_not_leak_it(
    llm_client: Any, fake: FakeProvider, kind: str, status: int
) -> None:
    """Proxies and compatible servers quote the key they refused ("Invalid API key: sk-...");
    the message reaches the command's error and events, which a session token reads."""
    fake.api_key = "sk-live-0123456789abcdef"
    key_env = {"OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY": fake.api_key}
    client = await llm_client(**key_env)
    engine = await create_llm_engine(client, model=MODELS[kind])
    fake.script(*[Fail(status, f"Invalid API key: {fake.api_key} (key={fake.api_key})", retry_after="0")] * 3)
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "failed" and record["error"]["code"].startswith("PROVIDER_")
    assert "Invalid API key: ********" in record["error"]["message"]
    assert fake.api_key not in await everything_said(client, record, engine["session_id"])


URL_ENV = {"ollama": "LLMGINE_OLLAMA_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}


@pytest.mark.parametrize("kind", ["ollama", "anthropic"])
async def test_credentials_in_a_base_url_are_never_shown(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    """A proxy's user and password in the base URL (``http://user:pass@proxy/v1``) are sent
    (HTTP basic auth, where the provider's key is not in Authorization) but never shown: not
    in a connection error, not in GET /api/config."""
    await fake.stop()  # nothing listens there now: a connection error
    url = (fake.base_url if kind == "ollama" else fake.root_url).replace("http://", "http://proxyuser:s3cret@")
    client = await llm_client(**{URL_ENV[kind]: url})
    engine = await create_llm_engine(client, model=f"{kind}/some-model")
    record = await execute(client, engine["engine_id"], "hi")
    assert record["error"]["code"] == "PROVIDER_UNAVAILABLE", record["error"]
    assert "proxyuser:********@" in record["error"]["message"]
    config = await (await client.get("/api/config")).text()
    assert "proxyuser:********@" in config
    assert "s3cret" not in await everything_said(client, record, engine["session_id"]) + config


async def test_credentials_in_a_base_url_beside_a_bearer_key_say_so(llm_client: Any, fake: FakeProvider) -> None:
    """OpenAI's key goes in Authorization, where basic auth from the URL would go too: a clear
    error (it was aiohttp's ValueError, a traceback), and no request."""
    client = await llm_client(OPENAI_BASE_URL=fake.base_url.replace("http://", "http://proxyuser:s3cret@"))
    engine = await create_llm_engine(client)
    record = await execute(client, engine["engine_id"], "hi")
    assert record["error"]["code"] == "PROVIDER_AUTH_FAILED", record["error"]
    assert "base_url carries a user and password" in record["error"]["message"]
    assert fake.requests == []


async def test_anthropic_temperature_above_1_is_422(llm_client: Any, fake: FakeProvider) -> None:
    """Anthropic's temperature is 0-1 (OpenAI's 0-2): 1.5 is refused at creation and per call,
    not sent for a 400 from the provider at every prompt."""
    client = await llm_client()
    sid = (await create_session(client))["session_id"]
    body = {"engine_type": "SinglePassEngine", "session_id": sid, "model_name": MODELS["anthropic"]}
    resp = await client.post("/api/engines", json={**body, "configuration": {"temperature": 1.5}})
    assert resp.status == 422, await resp.text()
    error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert error["details"]["field"] == "configuration.temperature" and "at most 1" in str(error["details"])
    # The default provider may be Anthropic too (a bare claude-* name, providers.default).
    resp = await client.post(
        "/api/engines", json={**body, "model_name": "claude-3-5-haiku-latest", "configuration": {"temperature": 1.01}}
    )
    assert resp.status == 422, await resp.text()
    engine = await create_llm_engine(client, sid, model=MODELS["anthropic"], temperature=1)
    record = await execute(client, engine["engine_id"], "hi", temperature=1.5)
    assert record["status"] == "failed" and record["error"]["details"]["field"] == "parameters.temperature"
    assert fake.requests == []
    # OpenAI's range is wider.
    engine = await create_llm_engine(client, temperature=1.5)
    assert (await execute(client, engine["engine_id"], "hi", temperature=2))["status"] == "completed"


# The answer's first bytes, before any text: OpenAI's role chunk, Anthropic's message_start.
BEFORE_TEXT = {
    "openai": sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
    "anthropic": sse(ANTHROPIC_START),
}
TEXT = {
    "openai": sse({**OPENAI_CHUNK, "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
    "anthropic": sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    ),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_reset_before_any_text_is_retried(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    """A stream cut before it produced anything is retried like a refused connection (nothing
    was shown to anyone yet)."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind])
    fake.script(Reset(BEFORE_TEXT[kind]), Reset(b""), Reply("made it"))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "completed", record["error"]
    assert record["result"]["text"] == "made it" and len(fake.requests) == 3


async def test_a_json_answer_cut_short_is_retried(llm_client: Any, fake: FakeProvider) -> None:
    """A server that ignored stream=true, its one JSON body cut by a reset (it was a
    COMMAND_EXECUTION_FAILED with aiohttp's traceback)."""
    client = await llm_client()
    engine = await create_llm_engine(client)
    fake.script(Reset(b'{"choices": [{"message": {"content": "cut', content_type="application/json"), Reply("whole"))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "completed", record["error"]
    assert record["result"]["text"] == "whole" and len(fake.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_reset_after_text_fails_unavailable(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind])
    fake.script(Reset(BEFORE_TEXT[kind] + TEXT[kind]), Reply("never asked"))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "failed"
    assert record["error"]["code"] == "PROVIDER_UNAVAILABLE", record["error"]
    assert record["error"]["details"]["attempts"] == 1 and len(fake.requests) == 1
    seen = await engine_events(client, engine["session_id"], record["command_id"])
    assert [d["text"] for t, d in seen if t == "EngineResponseDelta"] == ["Hel"]
    assert [d["status"] for t, d in seen if t == "EngineStatusUpdate"][-1] == "failed"


async def test_deleting_an_engine_mid_answer_stops_it(llm_client: Any, fake: FakeProvider) -> None:
    """DELETE /api/engines/{id} while it answers: the command was left running (calling the
    model, running tools) and its turn was written to the memory of an engine that no longer
    existed, rows nothing ever deleted."""
    client = await llm_client()
    engine = await create_llm_engine(client)
    sid, eid = engine["session_id"], engine["engine_id"]
    fake.script(Reply("Once upon a time there was", chunk=5, stall_after=2, stall=60))
    running = (await execute(client, eid, "tell me a story", wait=0))["command_id"]
    queued = (await execute(client, eid, "and another", wait=0))["command_id"]

    async def streaming() -> bool:
        seen = await engine_events(client, sid, running)
        return sum(1 for t, _ in seen if t == "EngineResponseDelta") >= 2

    await eventually(streaming)
    assert (await client.delete(f"/api/engines/{eid}")).status == 200
    record = await finished(client, sid, running)
    assert record["status"] == "cancelled", record
    assert record["error"]["message"] == "cancelled: its engine was deleted"
    # The queued one, as before: no handler (tests/api/test_engines.py).
    assert (await finished(client, sid, queued))["error"]["code"] == "HANDLER_NOT_FOUND"
    assert len(fake.requests) == 1
    rows = await client.app[BUS].store.fetchall("SELECT COUNT(*) FROM engine_messages")
    assert rows == [(0,)]


async def test_a_tool_the_model_made_up_is_not_put_to_a_person(llm_client: Any, fake: FakeProvider) -> None:
    """With require_approval: true, a call of a tool the session does not have (models make
    names up) asked a person to approve it, then failed TOOL_NOT_FOUND anyway; the model
    gets that error at once, naming the tools it has, and nobody is asked."""
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", require_approval=True)
    sid = engine["session_id"]
    await add_weather_tool(client, sid)
    fake.script(Reply("", tool_calls=[("launch_rocket", {"to": "moon"})]))
    record = await execute(client, engine["engine_id"], "go")
    assert record["status"] == "completed", record
    result = json.loads(fake.requests[-1].body["messages"][-1]["content"])
    assert result["code"] == "TOOL_NOT_FOUND" and result["available"] == ["get_weather"]
    listed = await (await client.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    assert listed["approvals"] == []
    assert record["result"]["tool_calls"][0]["is_error"] is True


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [429, 500, 401])
async def test_an_error_body_that_never_comes_is_not_waited_for(
    llm_client: Any, fake: FakeProvider, kind: str, status: int
) -> None:
    """The error's headers, then a body that never comes: the engine waited for it for ever
    (the timeout covered the headers and the answer's chunks, not an error's body)."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind], timeout=0.5)
    fake.script(*[Hang(status, content_type="application/json")] * 3)
    record = await execute(client, engine["engine_id"], "hi", wait=60)
    assert record["status"] == "failed", record
    # The status says what it was (and whether to retry).
    code = {429: "PROVIDER_RATE_LIMITED", 500: "PROVIDER_UNAVAILABLE", 401: "PROVIDER_AUTH_FAILED"}[status]
    assert record["error"]["code"] == code, record["error"]
    assert f"HTTP {status}" in record["error"]["message"] and "(no body within 0.5 s)" in record["error"]["message"]
    assert record["error"]["details"]["attempts"] == (1 if status == 401 else 3)


@pytest.mark.parametrize("model", ["o3-mini", "o4-mini", "gpt-5-mini", "o1"])
async def test_max_tokens_reaches_a_reasoning_model(llm_client: Any, fake: FakeProvider, model: str) -> None:
    """OpenAI's o-series and gpt-5 models refuse ``max_tokens`` (400 "Use
    'max_completion_tokens' instead"): every prompt of such an engine with max_tokens set
    failed PROVIDER_BAD_REQUEST."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=f"openai/{model}", max_tokens=50)
    record = await execute(client, engine["engine_id"], "hi")
    assert record["status"] == "completed", record["error"]
    sent = fake.requests[-1].body
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    # Other models keep max_tokens, which every OpenAI-compatible server knows.
    engine = await create_llm_engine(client, model="openai/gpt-4o-mini", max_tokens=50)
    await execute(client, engine["engine_id"], "hi")
    assert fake.requests[-1].body["max_tokens"] == 50


async def test_a_cancelled_anthropic_call_counts_the_input_it_was_billed(llm_client: Any, fake: FakeProvider) -> None:
    """Anthropic reports a call's input tokens when its stream starts (message_start); a call
    cut by a cancel counted none of them, though the provider bills them. (OpenAI reports
    usage only at the end of a stream: a cut OpenAI call has nothing to count.)"""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS["anthropic"])
    sid, eid = engine["session_id"], engine["engine_id"]
    fake.script(Reply("Once upon a time there was", chunk=5, stall_after=2, stall=60, usage=(5000, 7)))
    cid = (await execute(client, eid, "tell me a story", wait=0))["command_id"]

    async def streaming() -> bool:
        seen = await engine_events(client, sid, cid)
        return sum(1 for t, _ in seen if t == "EngineResponseDelta") >= 2

    await eventually(streaming)
    assert (await client.post(f"/api/sessions/{sid}/commands/{cid}/cancel")).status == 200
    record = await finished(client, sid, cid)
    assert record["status"] == "cancelled"
    assert record["usage"]["prompt_tokens"] == 5000 and record["usage"]["cost_usd"] > 0, record["usage"]
    response = dict(await engine_events(client, sid, cid))["EngineResponse"]
    assert response["finish_reason"] == "cancelled" and response["usage"]["prompt_tokens"] == 5000
    engine_usage = (await (await client.get(f"/api/engines/{eid}")).json())["usage"]
    assert engine_usage["prompt_tokens"] == 5000


async def test_more_concurrent_prompts_than_aiohttp_s_pool(llm_client: Any, fake: FakeProvider) -> None:
    """aiohttp's client pools 100 connections: the 101st concurrent prompt (101 sessions,
    each answering) waited for one to free up, and after ``timeout`` failed PROVIDER_TIMEOUT
    without ever reaching the provider."""
    client = await llm_client()
    engines = [await create_llm_engine(client) for _ in range(101)]
    fake.script(*[Stall(60)] * 101)
    for engine in engines:
        await execute(client, engine["engine_id"], "hi", wait=0)

    async def all_sent() -> bool:
        return len(fake.requests) == 101

    await eventually(all_sent)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_answer_that_never_ends_is_cut(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    """A local server generating without end (llama.cpp's and Ollama's default is no limit on
    the answer's tokens) held the command, and the session behind it, for ever, storing every
    chunk as an event. Past MAX_ANSWER_CHARS (more than any model writes in one answer) the
    stream is closed and the answer ends there, finish_reason "length"."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind])
    chunk = 50_000
    fake.script(Reply("ab" * (MAX_ANSWER_CHARS // 2 + 4 * chunk), chunk=chunk))
    record = await execute(client, engine["engine_id"], "count for ever", wait=120)
    assert record["status"] == "completed", record["error"]
    result = record["result"]
    assert result["finish_reason"] == "length"
    assert MAX_ANSWER_CHARS <= len(result["text"]) < MAX_ANSWER_CHARS + chunk
    stored = await messages(client, engine["engine_id"])
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["content"] == result["text"]


async def test_a_huge_json_answer_is_refused_unread(llm_client: Any, fake: FakeProvider) -> None:
    """A server that ignored stream=true answers one JSON body, which was read whole into
    memory however large (here 40 MiB; nothing stopped 40 GiB)."""
    client = await llm_client()
    engine = await create_llm_engine(client)
    body = b'{"choices": [{"message": {"content": "' + b"x" * (40 << 20) + b'"}}]}'
    fake.script(Raw(body, content_type="application/json"))
    record = await execute(client, engine["engine_id"], "hi", wait=60)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "PROVIDER_BAD_RESPONSE", record["error"]
    assert "larger than 32 MiB" in record["error"]["message"]


KEEPALIVE = {
    "openai": b": keep-alive\n\n",  # an SSE comment (OpenRouter's ": OPENROUTER PROCESSING")
    "anthropic": b'event: ping\ndata: {"type": "ping"}\n\n',
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("started", [False, True])
async def test_keepalives_alone_do_not_keep_a_stalled_answer_alive(
    llm_client: Any, fake: FakeProvider, kind: str, started: bool
) -> None:
    """A proxy or server that stalls but keeps the connection warm (SSE comments, Anthropic
    pings) held the command for ever: every line, answer or not, restarted the timeout."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind], timeout=0.5)
    before = BEFORE_TEXT[kind] + (TEXT[kind] if started else b"")
    fake.script(Hang(200, before, keepalive=KEEPALIVE[kind], every=0.05, seconds=60))
    record = await execute(client, engine["engine_id"], "hi", wait=30)
    assert record["status"] == "failed", record
    assert record["error"]["code"] == "PROVIDER_TIMEOUT", record["error"]


async def test_a_placeholder_key_is_not_masked_in_messages(llm_client: Any, fake: FakeProvider) -> None:
    """OPENAI_API_KEY=ollama (Ollama's docs: required but unused) is no secret: every "ollama"
    of the provider's messages masked would make them unreadable."""
    fake.api_key = "ollama"
    client = await llm_client(OPENAI_API_KEY="ollama")
    engine = await create_llm_engine(client)
    fake.script(Fail(404, "model 'llama3' not found, try pulling it first: ollama pull llama3"))
    record = await execute(client, engine["engine_id"], "hi")
    assert record["error"]["message"].endswith("ollama pull llama3"), record["error"]


async def test_one_answer_runs_at_most_32_tool_calls(llm_client: Any, fake: FakeProvider) -> None:
    """max_tool_rounds bounds the rounds, but nothing bounded the calls of one answer: a model
    writing thousands ran thousands in the sandbox, holding the session. Past 32 the calls
    are answered with an error (every call needs its result) and the model goes on."""
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine")
    sid = engine["session_id"]
    await add_weather_tool(client, sid)
    fake.script(Reply("", tool_calls=[("get_weather", {"location": f"city {n}"}) for n in range(34)]))
    record = await execute(client, engine["engine_id"], "all of them", wait=120)
    assert record["status"] == "completed", record["error"]
    calls = record["result"]["tool_calls"]
    assert len(calls) == 34 and [c["is_error"] for c in calls] == [False] * 32 + [True] * 2
    results = [m for m in fake.requests[-1].body["messages"] if m["role"] == "tool"]
    assert len(results) == 34 and "at most 32 tool calls" in results[-1]["content"]
    executed = [e for e in await engine_events(client, sid) if e[0] == "ToolExecuted"]
    assert len(executed) == 32


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_call_arguments_that_never_end_fail_the_call(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    """The answer's text was cut at MAX_ANSWER_CHARS, a tool call's arguments were not: a model
    looping inside a call's JSON grew the daemon's memory, and held the session, for as long as
    it went on. Past MAX_ANSWER_CHARS the call fails as a bad answer."""
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS[kind])
    fake.script(Reply("", tool_calls=[("lookup", {"q": "ab" * (MAX_ANSWER_CHARS // 2 + 100_000)})], args_chunk=200_000))
    record = await execute(client, engine["engine_id"], "look it up", wait=120)
    assert record["status"] == "failed" and record["error"]["code"] == "PROVIDER_BAD_RESPONSE", record
    assert "tool call's arguments ran past 4,000,000 characters" in record["error"]["message"], record["error"]
