"""A local fake LLM provider speaking the real wire formats (no internet in tests).

    POST /v1/chat/completions   OpenAI Chat Completions (streamed or not)
    POST /v1/messages           Anthropic Messages (streamed or not)

Each request takes the next scripted item (FIFO, shared by both APIs):

    Reply(text, tool_calls=[(name, args)], chunk=4, delay=0, stall_after=None)
    Fail(status, message, retry_after=None)     # 401, 429 + Retry-After, 500...
    Stall(seconds)                              # accept the request, say nothing
    StreamError(after=2, status=529)            # a few chunks, then an error inside the stream
    Raw(b"data: {not json\n\n")                 # exactly these bytes (malformed streams)
    Reset(b"data: ...\n\n")                     # these bytes of a 200 stream, then the connection dropped
    Hang(500, b'{"error": ')                    # this status and these bytes, then silence
    a callable(body) -> one of the above        # a reply computed from the request

With the script empty it echoes: ``echo: <last user text>``, or ``tool said: <result>`` after a
tool result. Every request is recorded (``fake.requests``) with its headers and body, so tests
check what the client actually sent. ``FakeProviderThread`` runs one in a background thread for
tests that start the real daemon as a process.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunk: int = 4  # characters per text delta
    delay: float = 0.0  # seconds between chunks
    finish_reason: str | None = None
    stall_after: int | None = None  # go silent after this many text chunks...
    stall: float = 3600.0  # ...for this long
    usage: tuple[int, int] = (11, 7)  # (prompt, completion), the cached part included
    cached: int = 0  # of usage[0], from the prompt cache
    raw_arguments: str | None = None  # send this (e.g. broken JSON) as the first call's arguments
    args_chunk: int = 5  # characters of a tool call's arguments per delta


@dataclass
class Fail:
    status: int
    message: str = "scripted failure"
    retry_after: str | None = None
    retry_after_ms: str | None = None


@dataclass
class Stall:
    seconds: float = 3600.0


@dataclass
class StreamError:
    after: int = 1  # text chunks sent before the error
    status: int = 529
    message: str = "Overloaded"
    text: str = "partial answer that never ends"


@dataclass
class Raw:
    """Exactly these bytes as the (200) response body: malformed streams."""

    body: bytes
    content_type: str = "text/event-stream"


@dataclass
class Reset:
    """A 200 event stream that sends these bytes, then drops the connection (a proxy or load
    balancer resetting it mid-answer)."""

    body: bytes = b""
    content_type: str = "text/event-stream"


@dataclass
class Hang:
    """These headers and bytes, then silence (an error body that never ends, a proxy that
    stalls mid-answer)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    seconds: float = 3600.0
    keepalive: bytes = b""  # sent every ``every`` seconds meanwhile (": ping\n\n", a ping event)
    every: float = 0.1


Item = Reply | Fail | Stall | StreamError | Raw | Reset | Hang
Script = Item | Callable[[dict[str, Any]], Item]

# OpenAI's reasoning models refuse max_tokens (max_completion_tokens only), as the real API does.
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Recorded:
    api: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


def _openai_usage(item: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": item.usage[0],
        "completion_tokens": item.usage[1],
        "total_tokens": sum(item.usage),
    }
    if item.cached:
        usage["prompt_tokens_details"] = {"cached_tokens": item.cached}
    return usage


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] if text else []


def _last_user_text(api: str, body: dict[str, Any]) -> tuple[str, str]:
    """(kind, text) of the last message: ("tool", result) or ("user", text)."""
    messages = body.get("messages") or []
    if not messages:
        return "user", ""
    last = messages[-1]
    content = last.get("content")
    if api == "openai":
        if last.get("role") == "tool":
            return "tool", str(content)
        return "user", content if isinstance(content, str) else json.dumps(content)
    if isinstance(content, str):
        return "user", content
    for block in reversed(content or []):
        if block.get("type") == "tool_result":
            inner = block.get("content")
            return "tool", inner if isinstance(inner, str) else json.dumps(inner)
        if block.get("type") == "text":
            return "user", block.get("text", "")
    return "user", ""


class FakeProvider:
    def __init__(self, api_key: str | None = "test-key") -> None:
        self.api_key = api_key
        self.script_items: deque[Script] = deque()
        self.requests: list[Recorded] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._openai)
        self.app.router.add_post("/v1/messages", self._anthropic)
        self._runner: web.AppRunner | None = None
        # As the SDKs want them: OpenAI's base URL includes /v1 (base_url), Anthropic's is the
        # server's root (root_url).
        self.base_url = ""
        self.root_url = ""

    # -- control ---------------------------------------------------------------------

    def script(self, *items: Script) -> None:
        self.script_items.extend(items)

    def _next(self, api: str, body: dict[str, Any]) -> Item:
        if self.script_items:
            item = self.script_items.popleft()
            return item(body) if callable(item) else item
        kind, text = _last_user_text(api, body)
        return Reply(text=f"tool said: {text}" if kind == "tool" else f"echo: {text}")

    async def start(self, port: int = 0) -> str:
        # handler_cancellation: a client that hangs up (a cancelled stream, a timeout) ends the
        # scripted stall at once instead of leaving it sleeping until shutdown.
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.root_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self.base_url = self.root_url + "/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- shared ----------------------------------------------------------------------

    async def _begin(self, api: str, request: web.Request) -> tuple[dict[str, Any], Item | web.StreamResponse]:
        try:
            body = await request.json()
        except ValueError:
            return {}, self._error(api, 400, "body is not JSON")
        self.requests.append(Recorded(api, dict(request.headers), body, time.monotonic()))
        if self.api_key is not None:
            if api == "openai":
                ok = request.headers.get("Authorization") == f"Bearer {self.api_key}"
            else:
                ok = request.headers.get("x-api-key") == self.api_key
                if not request.headers.get("anthropic-version"):
                    return body, self._error(api, 400, "anthropic-version header is required")
            if not ok:
                return body, self._error(api, 401, "Incorrect API key provided")
        item = self._next(api, body)
        if isinstance(item, Fail):
            headers = {}
            if item.retry_after is not None:
                headers["Retry-After"] = item.retry_after
            if item.retry_after_ms is not None:
                headers["retry-after-ms"] = item.retry_after_ms
            return body, self._error(api, item.status, item.message, headers)
        if isinstance(item, Stall):
            await asyncio.sleep(item.seconds)
            return body, self._error(api, 504, "stalled")
        if isinstance(item, Raw):
            return body, web.Response(body=item.body, content_type=item.content_type)
        if isinstance(item, Hang):
            resp = web.StreamResponse(status=item.status, headers={"Content-Type": item.content_type})
            await resp.prepare(request)
            await resp.write(item.body)
            deadline = time.monotonic() + item.seconds
            while item.keepalive and time.monotonic() < deadline:
                await asyncio.sleep(item.every)
                await resp.write(item.keepalive)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return body, resp
        if isinstance(item, Reset):
            resp = web.StreamResponse(headers={"Content-Type": item.content_type})
            await resp.prepare(request)
            await resp.write(item.body)
            assert request.transport is not None
            request.transport.abort()  # the chunked body never ends: the client sees it cut
            return body, resp
        return body, item

    @staticmethod
    def _error(api: str, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        if api == "openai":
            kind = "invalid_request_error" if status < 500 else "server_error"
            payload = {
                "error": {
                    "message": message,
                    "type": kind,
                    "param": None,
                    "code": "invalid_api_key" if status == 401 else None,
                }
            }
        else:
            payload = {
                "type": "error",
                "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
            }
        return web.json_response(payload, status=status, headers=headers)

    @staticmethod
    async def _sse(resp: web.StreamResponse, data: Any, event: str | None = None) -> None:
        text = (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"
        await resp.write(text.encode())

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        return resp

    # -- OpenAI ----------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, item = await self._begin("openai", request)
        if isinstance(item, web.StreamResponse):
            return item
        if REASONING_MODEL.match(str(body.get("model"))) and "max_tokens" in body:
            return self._error(
                "openai",
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
        model = body.get("model", "fake")
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if isinstance(item, StreamError):
            resp = await self._open_stream(request)
            await self._sse(resp, chunk({"role": "assistant", "content": ""}))
            for piece in _chunks(item.text, 4)[: item.after]:
                await self._sse(resp, chunk({"content": piece}))
            await self._sse(resp, {"error": {"message": item.message, "type": "server_error", "code": None}})
            return resp
        assert isinstance(item, Reply)
        finish = item.finish_reason or ("tool_calls" if item.tool_calls else "stop")
        calls = [(f"call_{uuid.uuid4().hex[:8]}", name, json.dumps(args)) for name, args in item.tool_calls]
        if calls and item.raw_arguments is not None:
            calls[0] = (calls[0][0], calls[0][1], item.raw_arguments)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": item.text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
                ]
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": _openai_usage(item),
                }
            )
        resp = await self._open_stream(request)
        await self._sse(resp, chunk({"role": "assistant", "content": ""}))
        for n, piece in enumerate(_chunks(item.text, item.chunk)):
            if item.stall_after is not None and n == item.stall_after:
                await asyncio.sleep(item.stall)
            await self._sse(resp, chunk({"content": piece}))
            if item.delay:
                await asyncio.sleep(item.delay)
        for index, (call_id, name, arguments) in enumerate(calls):
            await self._sse(
                resp,
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                ),
            )
            for piece in _chunks(arguments, item.args_chunk):  # JSON cut mid-token, as real servers do
                await self._sse(resp, chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        await self._sse(resp, chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await self._sse(
                resp,
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": _openai_usage(item),
                },
            )
        await resp.write(b"data: [DONE]\n\n")
        return resp

    # -- Anthropic -------------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, item = await self._begin("anthropic", request)
        if isinstance(item, web.StreamResponse):
            return item
        if "max_tokens" not in body:
            return self._error("anthropic", 400, "max_tokens: Field required")
        names = [t.get("name") for t in body.get("tools") or []]
        if len(names) != len(set(names)):
            return self._error("anthropic", 400, "tools: Tool names must be unique.")
        model = body.get("model", "fake")
        mid = f"msg_{uuid.uuid4().hex[:12]}"
        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 1},
            },
        }
        if isinstance(item, StreamError):
            resp = await self._open_stream(request)
            await self._sse(resp, start, "message_start")
            await self._sse(
                resp,
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
            for piece in _chunks(item.text, 4)[: item.after]:
                await self._sse(
                    resp,
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta",
                )
            await self._sse(
                resp,
                {
                    "type": "error",
                    "error": {"type": ANTHROPIC_ERROR_TYPES.get(item.status, "api_error"), "message": item.message},
                },
                "error",
            )
            return resp
        assert isinstance(item, Reply)
        reasons = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
        stop_reason = reasons.get(item.finish_reason or "", item.finish_reason) or (
            "tool_use" if item.tool_calls else "end_turn"
        )
        calls = [(f"toolu_{uuid.uuid4().hex[:8]}", name, json.dumps(args)) for name, args in item.tool_calls]
        if calls and item.raw_arguments is not None:
            calls[0] = (calls[0][0], calls[0][1], item.raw_arguments)
        start["message"]["usage"]["input_tokens"] = item.usage[0] - item.cached  # type: ignore[index]
        start["message"]["usage"]["cache_read_input_tokens"] = item.cached  # type: ignore[index]
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": item.text}] if item.text else []
            content += [{"type": "tool_use", "id": i, "name": n, "input": json.loads(a)} for i, n, a in calls]
            return web.json_response(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": item.usage[0] - item.cached,
                        "cache_read_input_tokens": item.cached,
                        "output_tokens": item.usage[1],
                    },
                }
            )
        resp = await self._open_stream(request)
        await self._sse(resp, start, "message_start")
        index = 0
        if item.text or not calls:
            await self._sse(
                resp,
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
            await self._sse(resp, {"type": "ping"}, "ping")
            for n, piece in enumerate(_chunks(item.text, item.chunk)):
                if item.stall_after is not None and n == item.stall_after:
                    await asyncio.sleep(item.stall)
                await self._sse(
                    resp,
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta",
                )
                if item.delay:
                    await asyncio.sleep(item.delay)
            await self._sse(resp, {"type": "content_block_stop", "index": 0}, "content_block_stop")
            index = 1
        for offset, (call_id, name, arguments) in enumerate(calls):
            i = index + offset
            await self._sse(
                resp,
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
                },
                "content_block_start",
            )
            for piece in _chunks(arguments, item.args_chunk):
                await self._sse(
                    resp,
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                    "content_block_delta",
                )
            await self._sse(resp, {"type": "content_block_stop", "index": i}, "content_block_stop")
        await self._sse(
            resp,
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": item.usage[1]},
            },
            "message_delta",
        )
        await self._sse(resp, {"type": "message_stop"}, "message_stop")
        return resp


class FakeProviderThread:
    """A FakeProvider on its own event loop in a daemon thread (for tests that run llmgined as
    a separate process). ``script`` is thread-safe enough: a deque append."""

    def __init__(self, api_key: str | None = "test-key") -> None:
        self.fake = FakeProvider(api_key)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fake-provider")

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


if __name__ == "__main__":  # a standalone fake for manual runs and the benchmark
    import argparse

    parser = argparse.ArgumentParser(description="fake OpenAI/Anthropic provider (echo)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="test-key")
    args = parser.parse_args()

    async def main() -> None:
        fake = FakeProvider(args.api_key)
        print(await fake.start(args.port), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
