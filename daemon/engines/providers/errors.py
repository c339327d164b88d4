"""Provider failures as one exception, ``ProviderError``, with one of our error codes (the
PROVIDER_* in protocol.ErrorCode), and the mapping from HTTP answers to it that every provider
shares (base.py's retry loop reads ``retryable`` and ``retry_after``).

    ProviderError(code, message, details)      code is one of PROVIDER_* in protocol.ErrorCode
     ├─ retryable=True   429, 5xx, 529, connection refused/reset — retried before any output
     └─ retryable=False  401/403, 4xx, malformed responses, timeouts
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from llmgine_daemon.protocol import ErrorCode
from llmgine_daemon.settings import redact_url

MASK = "********"


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


# -- error mapping ------------------------------------------------------------------------

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI), ``Retry-After`` seconds or an HTTP date."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    raw = headers.get("Retry-After")
    if not raw:
        return None
    seconds = _seconds(raw)
    if seconds is not None:
        return seconds
    if _is_number(raw):
        return None  # "inf", "nan", 1e400: float() takes them, no wait is meant by them
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _seconds(text: str | None) -> float | None:
    """A finite number of seconds (at least 0), else None."""
    if not text or not _is_number(text):
        return None
    value = float(text)
    return max(0.0, value) if math.isfinite(value) else None


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


async def read_error(provider: str, resp: aiohttp.ClientResponse, timeout: float) -> ProviderError:
    """Turn a non-2xx response into a ProviderError carrying the provider's own message.

    Both APIs answer ``{"error": {"message", "type"}}`` (Anthropic wraps it in a
    ``{"type": "error"}`` object); anything else is quoted, truncated. A body that does not
    come within ``timeout`` is not waited for: the status says enough.
    """
    message, kind = "", None
    try:
        async with asyncio.timeout(timeout):
            raw = await resp.content.read(64 * 1024)
    except TimeoutError:
        raw, message = b"", f"HTTP {resp.status} {resp.reason or ''}".rstrip() + f" (no body within {timeout:g} s)"
    except aiohttp.ClientError:
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


def text_piece(provider: str, value: Any) -> str:
    """A piece of the answer's text as the stream gave it ("" for none); anything but a
    string is a malformed answer (it must not reach an EngineResponseDelta)."""
    if value is None or isinstance(value, str):
        return value or ""
    raise bad_response(provider, f"answer text is a {type(value).__name__}, not a string")


def timeout_error(provider: str, timeout: float, stage: str) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_TIMEOUT,
        f"{provider}: no {stage} within {timeout:g} s",
        {"provider": provider, "timeout": timeout, "stage": stage},
    )


def stream_broken(provider: str, exc: aiohttp.ClientError) -> ProviderError:
    """The connection failed while the answer was read (reset, cut short). Retryable: the
    retry loop retries only while nothing of the answer reached the caller."""
    return ProviderError(
        ErrorCode.PROVIDER_UNAVAILABLE,
        f"{provider}: stream broken: {type(exc).__name__}: {exc}"[:500],
        {"provider": provider},
        retryable=True,
    )


def url_password(url: str) -> str | None:
    """The password in ``url``'s user part (``http://user:pass@proxy``), None without one."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def connection_error(provider: str, base_url: str, exc: BaseException) -> ProviderError:
    shown = redact_url(base_url)  # a proxy's password in the URL is not for the command's error
    return ProviderError(
        ErrorCode.PROVIDER_UNAVAILABLE,
        f"{provider}: cannot reach {shown}: {exc.__class__.__name__}: {exc}",
        {"provider": provider, "base_url": shown},
        retryable=True,
    )


def redirect_error(provider: str, status: int, location: str, url: str) -> ProviderError:
    """A 3xx answer to ``url``: never followed (a redirect could lead anywhere, loopback
    services and the cloud's metadata address included, with the prompt and Anthropic's key,
    and the start of that answer would reach the command's error, which a session token reads).
    Where it leads is named, without its query or user part, so that the owner can point the
    base URL there if it is the provider's new address."""
    target = urlsplit(urljoin(url, location)) if location else None
    where = "nowhere (no Location)"
    if target is not None and target.hostname:
        port = f":{target.port}" if target.port else ""
        where = f"{target.scheme}://{target.hostname}{port}{target.path}"[:300]
    return ProviderError(
        ErrorCode.PROVIDER_BAD_REQUEST,
        f"{provider}: HTTP {status}: the provider answered with a redirect to {where}, which is not "
        f"followed; if that is the provider's address, set providers.{provider}.base_url to it",
        {"provider": provider, "status": status},
    )
