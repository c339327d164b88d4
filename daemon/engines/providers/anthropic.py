"""Anthropic Messages (``POST {base_url}/v1/messages``, the base URL without ``/v1`` as in the
Anthropic SDK: providers/urls.py), streamed.

Differences from OpenAI that this module absorbs:
- the system prompt is a top-level ``system`` field, not a message;
- roles must alternate user/assistant: consecutive messages of one role are merged, and tool
  results travel as ``tool_result`` blocks inside a *user* message;
- ``max_tokens`` is required;
- the stream is typed events (message_start, content_block_start/delta/stop, message_delta,
  message_stop, ping, error); tool input arrives as ``input_json_delta`` fragments.
"""

from __future__ import annotations

import json
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
from llmgine_daemon.engines.providers.openai import parse_arguments
from llmgine_daemon.engines.providers.sse import SSEvent, iter_sse
from llmgine_daemon.engines.providers.urls import endpoint

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types -> the HTTP status they come with (for errors inside a stream).
ERROR_TYPES = {
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "invalid_request_error": 400,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _is_ping(sse: SSEvent) -> bool:
    """A keep-alive: it does not show the answer is moving (sse.py)."""
    return sse.event == "ping" or sse.data.replace(" ", "") == '{"type":"ping"}'


def to_wire(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for msg in messages:
        role = msg["role"]
        content = msg.get("content") or ""
        if role == "system":
            system_parts.append(content)
        elif role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg["tool_call_id"], "content": content}
            if msg.get("is_error"):
                block["is_error"] = True
            add("user", [block])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            for call in msg.get("tool_calls") or []:
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["arguments"]})
            if blocks:
                add("assistant", blocks)
        else:
            add("user", [{"type": "text", "text": content}])
    return ("\n\n".join(system_parts) or None), out


def build_body(request: ChatRequest) -> dict[str, Any]:
    system, messages = to_wire(request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
        ]
    return body


class _Block:
    __slots__ = ("type", "id", "name", "parts")

    def __init__(self, type_: str, id_: str = "", name: str = "") -> None:
        self.type = type_
        self.id = id_
        self.name = name
        self.parts: list[str] = []


class AnthropicProvider(Provider):
    async def _attempt(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        timeout = self.timeout_for(request)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "anthropic-version": self.config.api_version or DEFAULT_VERSION,
        }
        key = self.config.key()
        if key:
            headers["x-api-key"] = key
        resp = await self.post(endpoint("anthropic", self.config.base_url), build_body(request), headers, timeout)
        async with resp:
            if resp.status >= 400:
                raise await read_error(self.name, resp, timeout)
            async for item in self._from_stream(resp, timeout):
                yield item

    async def _from_stream(self, resp: aiohttp.ClientResponse, timeout: float) -> AsyncIterator[StreamItem]:
        blocks: dict[int, _Block] = {}
        args_size = 0  # of the tool calls' arguments, against MAX_ANSWER_CHARS
        stop_reason: str | None = None
        # Anthropic counts cache reads and writes apart from input_tokens; prompt_tokens is
        # their sum (what OpenAI's prompt_tokens means), cached_tokens the reads.
        prompt_tokens = completion_tokens = cached_tokens = 0
        model = ""
        finished = False
        tool_index = 0
        try:
            async for sse in iter_sse(resp, timeout, keepalive=_is_ping):
                try:
                    event = json.loads(sse.data)
                except ValueError:
                    raise bad_response(self.name, "stream event is not JSON", event=sse.data[:200]) from None
                if not isinstance(event, dict):
                    raise bad_response(self.name, "stream event is not an object", event=sse.data[:200])
                kind = event.get("type") or sse.event
                if kind == "message_start":
                    message = event.get("message") or {}
                    model = message.get("model", "")
                    usage = message.get("usage") or {}
                    cached_tokens = int(usage.get("cache_read_input_tokens") or 0)
                    prompt_tokens = (
                        int(usage.get("input_tokens") or 0)
                        + cached_tokens
                        + int(usage.get("cache_creation_input_tokens") or 0)
                    )
                    completion_tokens = int(usage.get("output_tokens") or 0)
                    self.reported = Usage(prompt_tokens, completion_tokens, cached_tokens)
                elif kind == "content_block_start":
                    raw = event.get("content_block") or {}
                    block = blocks[int(event.get("index", len(blocks)))] = _Block(
                        raw.get("type", ""), raw.get("id", ""), raw.get("name", "")
                    )
                    piece = text_piece(self.name, raw.get("text")) if block.type == "text" else ""
                    if piece:
                        block.parts.append(piece)
                        yield TextDelta(piece)
                    elif block.type == "tool_use":
                        yield ToolCallDelta(tool_index, block.id, block.name)
                        tool_index += 1
                elif kind == "content_block_delta":
                    index = int(event.get("index", -1))
                    if index not in blocks:
                        raise bad_response(self.name, "delta for a content block that never started", index=index)
                    delta = event.get("delta") or {}
                    piece = text_piece(self.name, delta.get("text")) if delta.get("type") == "text_delta" else ""
                    if piece:
                        blocks[index].parts.append(piece)
                        yield TextDelta(piece)
                    elif delta.get("type") == "input_json_delta":
                        blocks[index].parts.append(delta.get("partial_json") or "")
                        args_size += len(blocks[index].parts[-1])
                        if args_size > MAX_ANSWER_CHARS:
                            raise endless_arguments(self.name)
                    # thinking/signature deltas are not part of the answer text.
                elif kind == "message_delta":
                    stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                    usage = event.get("usage") or {}
                    if usage.get("output_tokens") is not None:
                        completion_tokens = int(usage["output_tokens"])
                    if usage.get("input_tokens"):
                        cached_tokens = int(usage.get("cache_read_input_tokens") or cached_tokens)
                        prompt_tokens = (
                            int(usage["input_tokens"])
                            + cached_tokens
                            + int(usage.get("cache_creation_input_tokens") or 0)
                        )
                elif kind == "message_stop":
                    finished = True
                    break
                elif kind == "error":
                    raise self._stream_error(event.get("error") or {})
                # ping, content_block_stop and unknown future events need nothing.
        except TimeoutError:
            raise timeout_error(self.name, timeout, "data from the stream") from None
        except ValueError as exc:
            raise bad_response(self.name, f"unreadable stream: {exc}") from None
        except aiohttp.ClientError as exc:  # reset, cut short (a payload error), disconnected
            raise stream_broken(self.name, exc) from None
        if not finished:
            raise bad_response(self.name, "stream ended without message_stop")
        text = "".join("".join(b.parts) for _, b in sorted(blocks.items()) if b.type == "text")
        calls = []
        for _, block in sorted(blocks.items()):
            if block.type == "tool_use":
                arguments, invalid = parse_arguments("".join(block.parts))
                calls.append(ToolCall(block.id, block.name, arguments, invalid))
        reason = STOP_REASONS.get(stop_reason or "end_turn", "other")
        self.reported = None  # counted from the Completion
        yield Completion(text, calls, reason, Usage(prompt_tokens, completion_tokens, cached_tokens), model)

    def _stream_error(self, error: dict[str, Any]) -> ProviderError:
        kind = str(error.get("type") or "api_error")
        message = str(error.get("message") or kind)
        return error_for_status(self.name, ERROR_TYPES.get(kind, 500), message, {}, kind)
