"""Provider-neutral types and the retry loop every provider shares.

    ProviderError(code, message, details)      code is one of PROVIDER_* in protocol.ErrorCode
     ├─ retryable=True   429, 5xx, 529, connection refused/reset — retried before any output
     └─ retryable=False  401/403, 4xx, malformed responses, timeouts

Conversation messages use one neutral shape (close to OpenAI's, which most servers speak):

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id", "name", "arguments": dict}],   # assistant only
     "tool_call_id": str, "name": str}                     # tool only

Each provider converts it to its wire format and turns its stream back into ``TextDelta`` /
``ToolCallDelta`` items followed by exactly one ``Completion``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from llmgine_daemon.protocol import ErrorCode

Message = dict[str, Any]


class ProviderError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model; ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    # The model's raw argument text when it was not a JSON object: the engine reports that
    # back to the model as the tool's error instead of running the tool with made-up input.
    invalid_arguments: str | None = None

    def as_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0  # all input tokens, cached ones included
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


def openai_usage(raw: dict[str, Any]) -> Usage:
    """OpenAI's ``usage`` (cached tokens in ``prompt_tokens_details``)."""
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        int(raw.get("prompt_tokens") or 0),
        int(raw.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A tool call the model has started writing (its arguments arrive later, whole, in the
    Completion); lets a UI show "calling get_weather…" while the arguments stream."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class Completion:
    text: str
    tool_calls: list[ToolCall]
    # Normalised to OpenAI's vocabulary: stop | length | tool_calls | content_filter | other.
    finish_reason: str
    usage: Usage
    model: str = ""


StreamItem = TextDelta | ToolCallDelta | Completion


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    # Seconds to wait for the response to start, and for each next chunk (a stall); None =
    # the provider's configured timeout.
    timeout: float | None = None


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str  # "openai" | "anthropic"
    base_url: str
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    # Backoff for retries without Retry-After: min(cap, base * 2**attempt), full jitter on top
    # half so many clients do not retry in lockstep.
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    # A Retry-After longer than this is not waited for: the call fails at once with it in
    # details (better than holding a command for minutes).
    max_retry_after: float = 30.0
    require_key: bool = True
    # Where else the key may be: the environment variable's name (providers.X.api_key_env),
    # looked up in the daemon's secret store (`llmgine secret set NAME`) when api_key is unset.
    api_key_env: str = ""
    secrets: Callable[[str], str | None] | None = field(default=None, compare=False, repr=False)

    def key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.secrets is not None and self.api_key_env:
            return self.secrets(self.api_key_env)
        return None

    api_version: str | None = None  # anthropic-version

    def __repr__(self) -> str:  # never print the key, even in a traceback's locals
        return f"ProviderConfig(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


# -- error mapping ------------------------------------------------------------------------

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI), ``Retry-After`` seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    provider: str, status: int, message: str, headers: Mapping[str, str], body_type: str | None = None
) -> ProviderError:
    details: dict[str, Any] = {"provider": provider, "status": status}
    if body_type:
        details["type"] = body_type
    retry_after = parse_retry_after(headers)
    if retry_after is not None:
        details["retry_after"] = retry_after
    text = f"{provider}: {message}" if message else f"{provider}: HTTP {status}"
    if status in (401, 403):
        return ProviderError(ErrorCode.PROVIDER_AUTH_FAILED, text, details)
    if status == 429:
        return ProviderError(ErrorCode.PROVIDER_RATE_LIMITED, text, details, retryable=True, retry_after=retry_after)
    if status in RETRYABLE_STATUSES or status >= 500:
        return ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, text, details, retryable=True, retry_after=retry_after)
    # 400/404/422...: the provider refused what we sent (unknown model, context too long).
    return ProviderError(ErrorCode.PROVIDER_BAD_REQUEST, text, details)


async def read_error(provider: str, resp: aiohttp.ClientResponse) -> ProviderError:
    """Turn a non-2xx response into a ProviderError carrying the provider's own message.

    Both APIs answer ``{"error": {"message", "type"}}`` (Anthropic wraps it in a
    ``{"type": "error"}`` object); anything else is quoted, truncated.
    """
    message, kind = "", None
    try:
        raw = await resp.content.read(64 * 1024)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    try:
        body = json.loads(raw or b"null")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            kind = error.get("type") or error.get("code")
        elif isinstance(error, str):
            message = error
    except ValueError:
        message = raw[:300].decode("utf-8", "replace").strip()
    return error_for_status(provider, resp.status, message or resp.reason or "", resp.headers, kind)


def bad_response(provider: str, what: str, **details: Any) -> ProviderError:
    return ProviderError(ErrorCode.PROVIDER_BAD_RESPONSE, f"{provider}: {what}", {"provider": provider, **details})


def timeout_error(provider: str, timeout: float, stage: str) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_TIMEOUT,
        f"{provider}: no {stage} within {timeout:g} s",
        {"provider": provider, "timeout": timeout, "stage": stage},
    )


def connection_error(provider: str, base_url: str, exc: BaseException) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_UNAVAILABLE,
        f"{provider}: cannot reach {base_url}: {exc.__class__.__name__}: {exc}",
        {"provider": provider, "base_url": base_url},
        retryable=True,
    )


# -- the provider base class ----------------------------------------------------------------


class Provider:
    """One configured provider. ``stream()`` retries retryable failures that happen before
    the first item was produced; once text has reached the caller a retry would repeat it, so
    a later failure is final."""

    def __init__(self, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        # Attempts made by the last call (tests and logs read it).
        self.last_attempts = 0

    @property
    def name(self) -> str:
        return self.config.name

    def _attempt(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    def backoff(self, attempt: int, error: ProviderError) -> float:
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self.config.backoff_cap, self.config.backoff_base * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    def check_key(self) -> None:
        if self.config.require_key and not self.config.key():
            var = self.config.api_key_env or f"{self.name.upper()}_API_KEY"
            raise ProviderError(
                ErrorCode.PROVIDER_AUTH_FAILED,
                f"{self.name}: no API key: the daemon reads {var} from its own environment, not "
                f"your shell's; run `llmgine secret set {var}` (or set it where the daemon "
                f"starts, or providers.{self.name}.api_key in its config file)",
                {"provider": self.name, "variable": var},
            )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        self.check_key()
        attempt = 0
        while True:
            attempt += 1
            self.last_attempts = attempt
            produced = False
            try:
                async for item in self._attempt(request):
                    produced = True
                    yield item
                return
            except ProviderError as exc:
                exc.details.setdefault("attempts", attempt)
                exc.details["attempts"] = attempt
                if produced or not exc.retryable or attempt > self.config.max_retries:
                    raise
                if exc.retry_after is not None and exc.retry_after > self.config.max_retry_after:
                    raise
                await asyncio.sleep(self.backoff(attempt - 1, exc))

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once (the stream, drained)."""
        async for item in self.stream(request):
            if isinstance(item, Completion):
                return item
        raise bad_response(self.name, "stream ended without a completion")

    def timeout_for(self, request: ChatRequest) -> float:
        return request.timeout if request.timeout is not None else self.config.timeout
