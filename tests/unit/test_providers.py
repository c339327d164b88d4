"""The provider clients against the local fake provider (real HTTP, real wire formats)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from llmgine_daemon.engines.providers import (
    ChatRequest,
    Completion,
    Provider,
    ProviderConfig,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    resolve_model,
)
from llmgine_daemon.engines.providers.anthropic import AnthropicProvider
from llmgine_daemon.engines.providers.errors import parse_retry_after
from llmgine_daemon.engines.providers.openai import OpenAIProvider
from llmgine_daemon.protocol import ErrorCode

from tests.fakes.provider import Fail, FakeProvider, Raw, Reply, Stall, StreamError

KINDS = ["openai", "anthropic"]
WEATHER = ToolSpec(
    "get_weather",
    "Get the weather",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


def make(kind: str, fake: FakeProvider, http: aiohttp.ClientSession, **changes: Any) -> Provider:
    config = ProviderConfig(
        name=kind,
        kind=kind,
        base_url=fake.root_url if kind == "anthropic" else fake.base_url,
        api_key="test-key",
        timeout=5.0,
        max_retries=2,
        backoff_base=0.01,
        backoff_cap=0.05,
    )
    config = ProviderConfig(**{**config.__dict__, **changes})
    return (OpenAIProvider if kind == "openai" else AnthropicProvider)(config, http)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(
        model="m-1", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}], **kw
    )


async def collect(provider: Provider, request: ChatRequest) -> tuple[list[Any], Completion]:
    items = [item async for item in provider.stream(request)]
    assert isinstance(items[-1], Completion)
    assert not any(isinstance(i, Completion) for i in items[:-1])
    return items[:-1], items[-1]


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_streams_text_deltas_in_order(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Reply("The quick brown fox jumps", chunk=3, usage=(21, 9), cached=5))
    deltas, done = await collect(make(kind, fake, http), ask("hi", temperature=0.2, max_tokens=50))
    assert [d.text for d in deltas] == ["The", " qu", "ick", " br", "own", " fo", "x j", "ump", "s"]
    assert done.text == "The quick brown fox jumps"
    assert done.finish_reason == "stop"
    # Cached tokens: OpenAI's prompt_tokens_details, Anthropic's cache_read_input_tokens.
    assert done.usage.as_dict() == {"prompt_tokens": 21, "completion_tokens": 9, "cached_tokens": 5}
    assert done.tool_calls == []


async def test_openai_request_on_the_wire(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    await collect(
        make("openai", fake, http), ask("hi", temperature=0.3, top_p=0.9, max_tokens=20, stop=["END"], tools=[WEATHER])
    )
    sent = fake.requests[-1]
    assert sent.headers["Authorization"] == "Bearer test-key"
    assert sent.body["model"] == "m-1"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (sent.body["temperature"], sent.body["top_p"], sent.body["max_tokens"], sent.body["stop"]) == (
        0.3,
        0.9,
        20,
        ["END"],
    )
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Get the weather", "parameters": WEATHER.parameters},
        }
    ]


async def test_anthropic_request_on_the_wire(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    await collect(make("anthropic", fake, http), ask("hi", temperature=0.3, stop=["END"], tools=[WEATHER]))
    sent = fake.requests[-1]
    assert sent.headers["x-api-key"] == "test-key"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent.headers
    assert sent.body["system"] == "be brief"
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent.body["max_tokens"] == 1024  # required by the API: a default is always sent
    assert sent.body["stop_sequences"] == ["END"]
    assert sent.body["tools"] == [
        {"name": "get_weather", "description": "Get the weather", "input_schema": WEATHER.parameters}
    ]


async def test_openai_non_streaming_server_is_understood(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    # A compatible server that ignores stream=true answers with one JSON object.
    def ignore_stream(body: dict[str, Any]) -> Reply:
        body["stream"] = False
        return Reply("whole answer", tool_calls=[("get_weather", {"location": "Oslo"})])

    fake.script(ignore_stream)
    deltas, done = await collect(make("openai", fake, http), ask("hi"))
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["whole answer"]
    assert done.tool_calls[0].arguments == {"location": "Oslo"}
    assert done.finish_reason == "tool_calls"


# -- tool calls -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_tool_call_arguments_are_joined(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    args = {"location": "Melbourne, Australia", "units": "metric", "days": [1, 2, 3]}
    fake.script(Reply("Let me check.", tool_calls=[("get_weather", args), ("get_time", {})]))
    items, done = await collect(make(kind, fake, http), ask("weather?", tools=[WEATHER]))
    starts = [i for i in items if isinstance(i, ToolCallDelta)]
    assert [s.name for s in starts] == ["get_weather", "get_time"]
    assert done.finish_reason == "tool_calls"
    assert done.text == "Let me check."
    assert [(c.name, c.arguments) for c in done.tool_calls] == [("get_weather", args), ("get_time", {})]
    assert all(c.id for c in done.tool_calls) and done.tool_calls[0].id != done.tool_calls[1].id
    assert done.tool_calls[0].invalid_arguments is None


@pytest.mark.parametrize("kind", KINDS)
async def test_malformed_tool_arguments_are_kept_raw(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.script(Reply(tool_calls=[("get_weather", {})], raw_arguments='{"location": "Par'))
    _, done = await collect(make(kind, fake, http), ask("weather?", tools=[WEATHER]))
    assert done.tool_calls[0].arguments == {}
    assert done.tool_calls[0].invalid_arguments == '{"location": "Par'


HISTORY = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "weather in Oslo and Rome?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "c1", "name": "get_weather", "arguments": {"location": "Oslo"}},
            {"id": "c2", "name": "get_weather", "arguments": {"location": "Rome"}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "cold"},
    {"role": "tool", "tool_call_id": "c2", "name": "get_weather", "content": "warm"},
]


async def test_openai_tool_round_trip_messages(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    _, done = await collect(make("openai", fake, http), ChatRequest("m", HISTORY, tools=[WEATHER]))
    assert done.text == "tool said: warm"
    wire = fake.requests[-1].body["messages"]
    assert wire[2] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}},
        ],
    }
    assert wire[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
        {"role": "tool", "tool_call_id": "c2", "content": "warm"},
    ]


async def test_anthropic_tool_round_trip_messages(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    _, done = await collect(make("anthropic", fake, http), ChatRequest("m", HISTORY, tools=[WEATHER]))
    assert done.text == "tool said: warm"
    body = fake.requests[-1].body
    assert body["system"] == "sys"
    # Roles alternate; both tool results travel in ONE user message.
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"location": "Oslo"}},
        {"type": "tool_use", "id": "c2", "name": "get_weather", "input": {"location": "Rome"}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "cold"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "warm"},
    ]


# -- errors and retries ---------------------------------------------------------------------


async def fail_with(provider: Provider, request: ChatRequest | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider.complete(request or ask("hi"))
    error = info.value
    assert error.code.startswith("PROVIDER_") and error.message
    return error


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_key_is_auth_failed_and_not_retried(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    provider = make(kind, fake, http, api_key="wrong")
    error = await fail_with(provider)
    assert error.code == ErrorCode.PROVIDER_AUTH_FAILED
    assert "Incorrect API key provided" in error.message  # the provider's own message
    assert error.details["status"] == 401 and error.details["attempts"] == 1
    assert len(fake.requests) == 1
    assert "wrong" not in error.message and "wrong" not in repr(error.details)


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_key_fails_before_any_request(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    error = await fail_with(make(kind, fake, http, api_key=None))
    assert error.code == ErrorCode.PROVIDER_AUTH_FAILED
    assert f"providers.{kind}.api_key" in error.message and "llmgine secret set" in error.message
    assert fake.requests == []


async def test_key_optional_provider_sends_no_auth(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.api_key = None
    _, done = await collect(make("openai", fake, http, api_key=None, require_key=False), ask("hi"))
    assert done.text == "echo: hi"
    assert "Authorization" not in fake.requests[-1].headers


@pytest.mark.parametrize("kind", KINDS)
async def test_429_is_retried_honouring_retry_after(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Fail(429, "slow down", retry_after="0"), Fail(429, "slow down", retry_after_ms="20"), Reply("ok"))
    provider = make(kind, fake, http)
    _, done = await collect(provider, ask("hi"))
    assert done.text == "ok"
    assert provider.last_attempts == 3 and len(fake.requests) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_429_past_the_retry_budget_is_rate_limited(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.script(*[Fail(429, "Rate limit reached for requests", retry_after="0")] * 3, Reply("never"))
    error = await fail_with(make(kind, fake, http))
    assert error.code == ErrorCode.PROVIDER_RATE_LIMITED
    assert "Rate limit reached" in error.message
    assert error.details["attempts"] == 3 and error.details["retry_after"] == 0
    assert len(fake.requests) == 3


async def test_long_retry_after_is_not_waited_for(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Fail(429, "come back later", retry_after="120"), Reply("never"))
    error = await fail_with(make("openai", fake, http))
    assert error.code == ErrorCode.PROVIDER_RATE_LIMITED
    assert error.details["retry_after"] == 120 and error.details["attempts"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_5xx_is_retried_then_unavailable(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Fail(500, "boom"), Reply("recovered"))
    provider = make(kind, fake, http)
    assert (await provider.complete(ask("hi"))).text == "recovered"
    assert provider.last_attempts == 2
    fake.script(Fail(500, "boom"), Fail(502, "bad gateway"), Fail(503, "Service Unavailable"), Reply("never"))
    error = await fail_with(provider)
    assert error.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "Service Unavailable" in error.message and error.details["status"] == 503
    assert error.details["attempts"] == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_4xx_is_bad_request_with_the_providers_message(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.script(Fail(404, "The model `m-1` does not exist"))
    error = await fail_with(make(kind, fake, http))
    assert error.code == ErrorCode.PROVIDER_BAD_REQUEST
    assert "does not exist" in error.message and error.details["attempts"] == 1


async def test_unreachable_is_unavailable(http: aiohttp.ClientSession) -> None:
    fake = FakeProvider()
    await fake.start()
    await fake.stop()  # the port is now closed: connection refused
    error = await fail_with(make("openai", fake, http, max_retries=1))
    assert error.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "cannot reach" in error.message and error.details["attempts"] == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_stall_before_answer_is_timeout(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Stall(60))
    error = await fail_with(make(kind, fake, http, timeout=0.3))
    assert error.code == ErrorCode.PROVIDER_TIMEOUT
    assert error.details["timeout"] == 0.3 and error.details["attempts"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_stall_mid_stream_is_timeout(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    fake.script(Reply("one two three four", chunk=4, stall_after=2, stall=60))
    provider = make(kind, fake, http)
    got: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for item in provider.stream(ask("hi", timeout=0.3)):
            if isinstance(item, TextDelta):
                got.append(item.text)
    assert info.value.code == ErrorCode.PROVIDER_TIMEOUT
    assert got == ["one ", "two "]


@pytest.mark.parametrize("kind", KINDS)
async def test_error_inside_the_stream(kind: str, fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    # Before any text: retried. After text: final (a retry would repeat what the caller saw).
    fake.script(StreamError(after=0), Reply("second try"))
    provider = make(kind, fake, http)
    assert (await provider.complete(ask("hi"))).text == "second try"
    fake.script(StreamError(after=2, status=529, message="Overloaded"), Reply("never"))
    error = await fail_with(provider)
    assert error.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "Overloaded" in error.message and error.details["attempts"] == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "body, issue",
    [
        (b"data: {not json\n\n", "not JSON"),
        (b"data: [1, 2]\n\n", "not an object"),
        (b": just a comment\n\n", "ended"),
    ],
)
async def test_garbage_stream_is_bad_response(
    kind: str, body: bytes, issue: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.script(Raw(body))
    error = await fail_with(make(kind, fake, http))
    assert error.code == ErrorCode.PROVIDER_BAD_RESPONSE and issue in error.message
    assert error.details["attempts"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_the_consumer_closes_the_stream(
    kind: str, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.script(Reply("a b c d e f", chunk=2, stall_after=2, stall=60))
    provider = make(kind, fake, http)
    got: list[str] = []
    first_two = asyncio.Event()

    async def consume() -> None:
        async for item in provider.stream(ask("hi")):
            if isinstance(item, TextDelta):
                got.append(item.text)
                if len(got) == 2:
                    first_two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_two.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == ["a ", "b "]
    # The connection was released: the next call works at once.
    assert (await provider.complete(ask("again"))).text == "echo: again"


# -- helpers --------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    # Not a number of seconds (float() takes them): unparseable, not an infinite wait that
    # went into error.details as null, nor a NaN.
    for odd in ("inf", "Infinity", "nan", "1e400"):
        assert parse_retry_after({"Retry-After": odd}) is None, odd
        assert parse_retry_after({"retry-after-ms": odd}) is None, odd
    future = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 5 < (parse_retry_after({"Retry-After": future}) or 0) <= 10


def test_backoff_has_jitter_and_a_cap() -> None:
    provider = OpenAIProvider(ProviderConfig("openai", "openai", "http://x", backoff_base=1, backoff_cap=4), None)  # type: ignore[arg-type]
    rate = ProviderError(ErrorCode.PROVIDER_RATE_LIMITED, "x", retryable=True, retry_after=7)
    assert provider.backoff(0, rate) == 7
    plain = ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "x", retryable=True)
    assert all(0.5 <= provider.backoff(0, plain) <= 1 for _ in range(50))
    assert all(2 <= provider.backoff(10, plain) <= 4 for _ in range(50))
    assert len({provider.backoff(3, plain) for _ in range(20)}) > 1


def test_model_routing() -> None:
    assert resolve_model("gpt-4") == ("openai", "gpt-4")
    assert resolve_model("openai/gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert resolve_model("anthropic/claude-3-5-haiku-latest") == ("anthropic", "claude-3-5-haiku-latest")
    assert resolve_model("claude-3-opus") == ("anthropic", "claude-3-opus")
    assert resolve_model("ollama/llama3") == ("ollama", "llama3")
    assert resolve_model("llama3", default_provider="ollama") == ("ollama", "llama3")
    # Only a known provider prefix is split off (OpenRouter model ids contain slashes).
    assert resolve_model("meta-llama/llama-3-8b") == ("openai", "meta-llama/llama-3-8b")
    assert resolve_model("openai/meta-llama/llama-3-8b") == ("openai", "meta-llama/llama-3-8b")
    for bad in ("", "openai/"):
        with pytest.raises(ValueError):
            resolve_model(bad)


def test_config_repr_hides_the_key() -> None:
    config = ProviderConfig("openai", "openai", "http://x", api_key="sk-secret")
    assert "sk-secret" not in repr(config) and "sk-secret" not in str(config)
