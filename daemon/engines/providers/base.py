"""Provider-neutral types and the retry loop every provider shares (the retryable failures
are ``ProviderError``s, errors.py).

Conversation messages use one neutral shape (close to OpenAI's, which most servers speak):

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id", "name", "arguments": dict}],   # assistant only
     "tool_call_id": str, "name": str}                     # tool only

Each provider converts it to its wire format and turns its stream back into ``TextDelta`` /
``ToolCallDelta`` items followed by exactly one ``Completion``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from llmgine_daemon.engines.providers.errors import (
    MASK,
    ProviderError,
    bad_response,
    connection_error,
    redirect_error,
    timeout_error,
    url_password,
)
from llmgine_daemon.protocol import ErrorCode

Message = dict[str, Any]


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


# -- the provider base class ----------------------------------------------------------------

# The longest answer one model call may stream (characters): more than any model writes (1M
# tokens, max_tokens' maximum, are about 4M characters). A server that generates without end
# (llama.cpp's and Ollama's default: no limit) is cut there, finish_reason "length".
MAX_ANSWER_CHARS = 4_000_000


def endless_arguments(provider: str) -> ProviderError:
    """A tool call's arguments past MAX_ANSWER_CHARS (a model looping inside a call's JSON):
    the call fails rather than hold ever more memory, and the session, for ever."""
    return bad_response(provider, f"a tool call's arguments ran past {MAX_ANSWER_CHARS:,} characters")


# What reading a provider's JSON of an unexpected shape raises in the parsers.
_MISSHAPEN = (AttributeError, IndexError, KeyError, TypeError, ValueError)


class Provider:
    """One configured provider. ``stream()`` retries retryable failures that happen before
    the first item was produced; once text has reached the caller a retry would repeat it, so
    a later failure is final."""

    def __init__(self, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        # Attempts made by the last call (tests and logs read it).
        self.last_attempts = 0
        # Tokens the provider reported for the call in progress before its Completion
        # (Anthropic's message_start): what a call cut by a cancel was billed. None: nothing.
        self.reported: Usage | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def _attempt(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    async def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> aiohttp.ClientResponse:
        """POST the request; the response once its headers arrived (within ``timeout``). A
        redirect is not followed (errors.py ``redirect_error``)."""
        if "Authorization" in headers and url_password(url) is not None:
            # aiohttp would raise ValueError: basic auth from the URL and the key's Bearer
            # header both go in Authorization.
            raise ProviderError(
                ErrorCode.PROVIDER_AUTH_FAILED,
                f"{self.name}: providers.{self.name}.base_url carries a user and password (HTTP basic "
                f"auth), which cannot be sent beside the API key's Authorization header: keep one",
                {"provider": self.name},
            )
        try:
            async with asyncio.timeout(timeout):
                resp = await self.http.post(url, json=body, headers=headers, read_bufsize=2**20, allow_redirects=False)
        except TimeoutError:
            raise timeout_error(self.name, timeout, "response") from None
        except aiohttp.ClientError as exc:
            raise connection_error(self.name, self.config.base_url, exc) from None
        if 300 <= resp.status < 400:
            resp.release()
            raise redirect_error(self.name, resp.status, resp.headers.get("Location", ""), url)
        return resp

    def scrub(self, exc: ProviderError) -> ProviderError:
        """``exc`` without the API key or the base URL's password, wherever the provider (or a
        proxy) quoted them: its message and details reach the command's error and events,
        which a session token reads."""
        # Not a placeholder key a local server ignores ("ollama", "EMPTY"): every "ollama" masked.
        key, password = self.config.key() or "", url_password(self.config.base_url) or ""
        secrets = [s for s in (key if len(key) >= 12 else "", password) if len(s) >= 4]
        for secret in secrets:
            exc.message = exc.message.replace(secret, MASK)
            exc.args = (exc.message,)
            for name, value in exc.details.items():
                if isinstance(value, str):
                    exc.details[name] = value.replace(secret, MASK)
        return exc

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
            self.reported = None
            produced = False
            try:
                async with contextlib.aclosing(self._attempt(request)) as items:  # closes the response
                    text: list[str] = []
                    size = 0
                    async for item in items:
                        produced = True
                        yield item
                        if isinstance(item, TextDelta):
                            text.append(item.text)
                            size += len(item.text)
                            if size >= MAX_ANSWER_CHARS:
                                yield self.cut_short("".join(text))
                                return
                return
            except _MISSHAPEN as exc:
                # Valid JSON of another shape than the API's (a string where it has an object,
                # a count that is not a number): the provider's fault, not a bug of ours.
                raise self.scrub(
                    bad_response(self.name, f"malformed answer ({type(exc).__name__}: {exc})"[:300], attempts=attempt)
                ) from None
            except ProviderError as exc:
                exc.details["attempts"] = attempt
                self.scrub(exc)
                if produced or not exc.retryable or attempt > self.config.max_retries:
                    raise
                if exc.retry_after is not None and exc.retry_after > self.config.max_retry_after:
                    raise
                await asyncio.sleep(self.backoff(attempt - 1, exc))

    def cut_short(self, text: str) -> Completion:
        """The answer of a stream closed at MAX_ANSWER_CHARS: what arrived, as if max_tokens
        had ended it; the tokens the provider had reported (Anthropic's input), if any."""
        usage, self.reported = self.reported or Usage(), None
        return Completion(text, [], "length", usage)

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once (the stream, drained)."""
        async for item in self.stream(request):
            if isinstance(item, Completion):
                return item
        raise bad_response(self.name, "stream ended without a completion")

    def timeout_for(self, request: ChatRequest) -> float:
        return request.timeout if request.timeout is not None else self.config.timeout
