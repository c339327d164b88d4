"""OpenAI Chat Completions (``POST {base_url}/chat/completions``, the base URL including ``/v1``
as in the OpenAI SDK: providers/urls.py), streamed.

Speaks the wire format OpenAI documents, which Ollama, vLLM, llama.cpp server, LM Studio and
OpenRouter also serve, so one client covers them all (``base_url`` differs).

Streamed tool calls arrive as fragments keyed by ``index``: the first fragment of a call
carries its ``id`` and ``function.name``, later ones only pieces of ``function.arguments``
(a JSON text cut anywhere). They are joined per index and parsed once the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from llmgine_daemon.engines.providers.base import (
    MAX_ANSWER_CHARS,
    ChatRequest,
    Completion,
    Message,
    Provider,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    endless_arguments,
    openai_usage,
)
from llmgine_daemon.engines.providers.errors import (
    ProviderError,
    bad_response,
    error_for_status,
    read_error,
    stream_broken,
    text_piece,
    timeout_error,
)
from llmgine_daemon.engines.providers.sse import iter_sse
from llmgine_daemon.engines.providers.urls import endpoint

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}
# A non-streamed answer's body (an answer of MAX_ANSWER_CHARS, escaped, fits).
MAX_JSON_BYTES = 32 << 20
# o1, o3-mini, o4-mini, gpt-5...: OpenAI's reasoning models, by the names OpenAI gives them.
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


def to_wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        if role == "assistant" and msg.get("tool_calls"):
            out.append(
                {
                    "role": "assistant",
                    # null, not "", when there is no text: some servers reject an empty string
                    # beside tool_calls.
                    "content": msg.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                        }
                        for call in msg["tool_calls"]
                    ],
                }
            )
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": msg["tool_call_id"], "content": msg.get("content", "")})
        else:
            out.append({"role": role, "content": msg.get("content", "")})
    return out


def build_body(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": to_wire_messages(request.messages),
        "stream": True,
        # Without it a stream carries no token counts.
        "stream_options": {"include_usage": True},
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        # OpenAI's reasoning models refuse max_tokens (400 "Use 'max_completion_tokens'
        # instead"); every other server, compatible ones included, knows max_tokens.
        body["max_completion_tokens" if REASONING_MODEL.match(request.model) else "max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
    return body


def parse_arguments(text: str) -> tuple[dict[str, Any], str | None]:
    if not text.strip():
        return {}, None
    try:
        value = json.loads(text)
    except ValueError:
        return {}, text
    if not isinstance(value, dict):
        return {}, text
    return value, None


class _Call:
    __slots__ = ("id", "name", "arguments")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class OpenAIProvider(Provider):
    async def _attempt(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        timeout = self.timeout_for(request)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = self.config.key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        resp = await self.post(endpoint("openai", self.config.base_url), build_body(request), headers, timeout)
        async with resp:
            if resp.status >= 400:
                raise await read_error(self.name, resp, timeout)
            if not resp.content_type.startswith("text/event-stream"):
                # A server that ignored stream=true answers with one JSON completion.
                async for item in self._from_json(resp, timeout):
                    yield item
                return
            async for item in self._from_stream(resp, timeout):
                yield item

    async def _from_stream(self, resp: aiohttp.ClientResponse, timeout: float) -> AsyncIterator[StreamItem]:
        text: list[str] = []
        calls: dict[int, _Call] = {}
        args_size = 0  # of the tool calls' arguments, against MAX_ANSWER_CHARS
        finish_reason: str | None = None
        usage = Usage()
        model = ""
        done = False
        try:
            async for sse in iter_sse(resp, timeout):
                if sse.data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(sse.data)
                except ValueError:
                    raise bad_response(self.name, "stream chunk is not JSON", chunk=sse.data[:200]) from None
                if not isinstance(chunk, dict):
                    raise bad_response(self.name, "stream chunk is not an object", chunk=sse.data[:200])
                if "error" in chunk:
                    raise self._stream_error(chunk["error"])
                model = chunk.get("model") or model
                if isinstance(chunk.get("usage"), dict):
                    usage = openai_usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    piece = text_piece(self.name, delta.get("content"))
                    if piece:
                        text.append(piece)
                        yield TextDelta(piece)
                    for frag in delta.get("tool_calls") or []:
                        index = int(frag.get("index", len(calls)))
                        call = calls.get(index)
                        if call is None:
                            call = calls[index] = _Call()
                        fn = frag.get("function") or {}
                        started = not call.name and bool(fn.get("name"))
                        call.id = frag.get("id") or call.id
                        call.name = call.name or fn.get("name") or ""
                        if fn.get("arguments"):
                            call.arguments.append(fn["arguments"])
                            args_size += len(fn["arguments"])
                            if args_size > MAX_ANSWER_CHARS:
                                raise endless_arguments(self.name)
                        if started:
                            yield ToolCallDelta(index, call.id, call.name)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        except TimeoutError:
            raise timeout_error(self.name, timeout, "data from the stream") from None
        except ValueError as exc:  # a line longer than the read buffer
            raise bad_response(self.name, f"unreadable stream: {exc}") from None
        except aiohttp.ClientError as exc:  # reset, cut short (a payload error), disconnected
            raise stream_broken(self.name, exc) from None
        if not done and finish_reason is None:
            raise bad_response(self.name, "stream ended before the answer was finished")
        yield self._completion("".join(text), calls, finish_reason, usage, model)

    async def _from_json(self, resp: aiohttp.ClientResponse, timeout: float) -> AsyncIterator[StreamItem]:
        try:
            async with asyncio.timeout(timeout):
                raw = bytearray()
                while len(raw) <= MAX_JSON_BYTES and (more := await resp.content.read(MAX_JSON_BYTES + 1 - len(raw))):
                    raw += more
            if len(raw) > MAX_JSON_BYTES:  # never read whole into memory
                raise bad_response(self.name, f"JSON answer larger than {MAX_JSON_BYTES >> 20} MiB")
            body = json.loads(raw)
        except TimeoutError:
            raise timeout_error(self.name, timeout, "response body") from None
        except aiohttp.ClientError as exc:
            raise stream_broken(self.name, exc) from None
        except ValueError:
            raise bad_response(self.name, "response is neither an event stream nor JSON") from None
        try:
            choice = body["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise bad_response(self.name, "response has no choices[0].message") from None
        content = message.get("content") or ""
        if content:
            yield TextDelta(content)
        calls: dict[int, _Call] = {}
        for index, raw in enumerate(message.get("tool_calls") or []):
            call = calls[index] = _Call()
            call.id = raw.get("id", "")
            call.name = (raw.get("function") or {}).get("name", "")
            call.arguments.append((raw.get("function") or {}).get("arguments") or "")
        raw_usage = body.get("usage")
        usage = openai_usage(raw_usage) if isinstance(raw_usage, dict) else Usage()
        yield self._completion(content, calls, choice.get("finish_reason"), usage, body.get("model", ""))

    def _completion(
        self, text: str, calls: dict[int, _Call], finish_reason: str | None, usage: Usage, model: str
    ) -> Completion:
        tool_calls = []
        for index in sorted(calls):
            call = calls[index]
            if not call.name:
                raise bad_response(self.name, "tool call without a function name", index=index)
            arguments, invalid = parse_arguments("".join(call.arguments))
            tool_calls.append(ToolCall(call.id or f"call_{index}", call.name, arguments, invalid))
        reason = finish_reason or "stop"
        if reason == "function_call":
            reason = "tool_calls"
        if tool_calls and reason == "stop":
            # Some compatible servers say "stop" even when they return tool calls.
            reason = "tool_calls"
        return Completion(text, tool_calls, reason if reason in FINISH_REASONS else "other", usage, model)

    def _stream_error(self, error: Any) -> ProviderError:
        if not isinstance(error, dict):
            return bad_response(self.name, f"error in stream: {error!r}"[:300])
        message = str(error.get("message") or "error in stream")
        status = error.get("status") or error.get("code")
        kind = error.get("type")
        if isinstance(status, int):
            return error_for_status(self.name, status, message, {}, kind)
        if kind in ("server_error", "service_unavailable"):
            return error_for_status(self.name, 503, message, {}, kind)
        if kind in ("rate_limit_exceeded", "rate_limit_error") or status == "rate_limit_exceeded":
            return error_for_status(self.name, 429, message, {}, kind)
        return bad_response(self.name, message, type=kind)
