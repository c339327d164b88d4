"""Error codes, their HTTP statuses, protocol headers, timestamps, and the error envelope."""

from __future__ import annotations

import datetime as _dt
import re
import time as _time
from itertools import accumulate
from typing import Any

import msgspec
from llmgine_daemon.protocol.grammar import Timestamp

# -- error codes --------------------------------------------------------------------------


class ErrorCode:
    """Every ``error.code`` the API can return, with its HTTP status."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_JSON = "INVALID_JSON"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_CLOSED = "SESSION_CLOSED"
    ENGINE_NOT_FOUND = "ENGINE_NOT_FOUND"
    COMMAND_NOT_FOUND = "COMMAND_NOT_FOUND"
    EVENT_NOT_FOUND = "EVENT_NOT_FOUND"
    COMMAND_EXECUTION_FAILED = "COMMAND_EXECUTION_FAILED"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    HANDLER_NOT_FOUND = "HANDLER_NOT_FOUND"
    CONFLICT = "CONFLICT"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    LIMIT_REACHED = "LIMIT_REACHED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    STORAGE_BUSY = "STORAGE_BUSY"
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
    STORAGE_DAMAGED = "STORAGE_DAMAGED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    # ``after`` would make commands wait for each other in a circle (bus/commands/deps.py).
    DEPENDENCY_CYCLE = "DEPENDENCY_CYCLE"
    # These three only ever appear in a command record's ``error`` (a result, not a transport
    # error), so they have no HTTP status of their own.
    COMMAND_TIMEOUT = "COMMAND_TIMEOUT"
    COMMAND_CANCELLED = "COMMAND_CANCELLED"
    COMMAND_INTERRUPTED = "COMMAND_INTERRUPTED"
    # An LLM provider failed a model call. They end an engine command (``error.code`` of a
    # failed command record); the HTTP statuses are the gateway ones, for any endpoint that
    # calls a provider synchronously.
    PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    PROVIDER_BAD_RESPONSE = "PROVIDER_BAD_RESPONSE"
    PROVIDER_BAD_REQUEST = "PROVIDER_BAD_REQUEST"
    SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"  # no worker can run user code


class CallErrorCode:
    """``error.code`` inside a tool result or a failed handler's details: how user code failed.
    These are outcomes, not HTTP errors (a tool that raises is still a 200)."""

    SYNTAX_ERROR = "SYNTAX_ERROR"
    CODE_ERROR = "CODE_ERROR"  # running the module's top level raised
    FUNCTION_NOT_FOUND = "FUNCTION_NOT_FOUND"
    EXECUTION_FAILED = "EXECUTION_FAILED"  # the function raised
    INVALID_RESULT = "INVALID_RESULT"  # not JSON-serialisable
    RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
    TIMEOUT = "TIMEOUT"
    WORKER_CRASHED = "WORKER_CRASHED"
    SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"
    SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"  # an MCP tool server is not running (restarting)


ERROR_STATUS: dict[str, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_CLOSED: 409,
    ErrorCode.ENGINE_NOT_FOUND: 404,
    ErrorCode.COMMAND_NOT_FOUND: 404,
    ErrorCode.EVENT_NOT_FOUND: 404,
    ErrorCode.COMMAND_EXECUTION_FAILED: 500,
    ErrorCode.TOOL_NOT_FOUND: 404,
    ErrorCode.HANDLER_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.KEY_NOT_FOUND: 404,
    # A configured maximum (sessions, engines, tools, WebSockets) is reached: the request
    # conflicts with the server's current state; ending something frees room.
    ErrorCode.LIMIT_REACHED: 409,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.STORAGE_BUSY: 503,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    # The database file is damaged: nothing is served from it until an operator restores it.
    ErrorCode.STORAGE_DAMAGED: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.DEPENDENCY_CYCLE: 400,
    ErrorCode.SANDBOX_UNAVAILABLE: 503,
    ErrorCode.PROVIDER_AUTH_FAILED: 502,
    ErrorCode.PROVIDER_RATE_LIMITED: 429,
    ErrorCode.PROVIDER_UNAVAILABLE: 502,
    ErrorCode.PROVIDER_TIMEOUT: 504,
    ErrorCode.PROVIDER_BAD_RESPONSE: 502,
    ErrorCode.PROVIDER_BAD_REQUEST: 502,
}

# Browsers cannot set headers on a WebSocket: they offer the credential as a subprotocol
# ``llmgine.bearer.<TOKEN>`` next to the endpoint's own (``llmgine.events.v1`` for event
# streams, api/streams.py) or this generic one, and the daemon selects that one.
WS_PROTOCOL = "llmgine"
WS_TOKEN_PROTOCOL_PREFIX = "llmgine.bearer."
SESSION_TOKEN_HEADER = "X-Session-Token"

# The header the daemon stamps on every response so a client can report a version mismatch.
VERSION_HEADER = "X-Llmgine-Version"
REQUEST_ID_HEADER = "X-Request-ID"


_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """UTC now as 2024-01-01T00:00:00.123456Z; the part up to the second is formatted once per
    second (this runs several times per command)."""
    global _second
    now = _time.time()
    whole = int(now)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole)))
    return f"{cached[1]}.{int((now - whole) * 1_000_000):06d}Z"


def parse_iso(text: str) -> _dt.datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC. RFC 3339 (``format:
    date-time``) lets ``T`` and ``Z`` be lower case, as pydantic reads them: ``...t06:00:00z``."""
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    try:
        return value.astimezone(_dt.UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is before the earliest UTC time there is: as a bound it
        # means "since the beginning" (or "until the end").
        edge = _dt.datetime.min if value.year == 1 else _dt.datetime.max
        return edge.replace(tzinfo=_dt.UTC)


def to_iso(value: _dt.datetime) -> str:
    # isoformat, not strftime: %Y does not zero-pad years before 1000 ("215-02-03..."), which
    # then fails to parse back.
    return value.astimezone(_dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# -- errors ------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody
    timestamp: Timestamp
    request_id: str


# Every JSON body nests at most this deep (objects and arrays; the body itself is level 1):
# events' data and metadata, command parameters, tool arguments, session metadata... Deeper is
# 422 VALIDATION_ERROR. Nothing legitimate comes close, and whatever reads the data later (the
# CLI, a browser, user code, json in a sandbox) must not be handed a structure that blows its
# recursion limit.
MAX_JSON_DEPTH = 64
# A JSON string, escapes included; what is left between them is structure.
_JSON_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests objects/arrays more than ``limit`` deep.

    For syntactically valid JSON (decode it first). Linear and in C: brackets outside strings,
    as +1/-1 steps, and the highest running sum. An ordinary body has fewer brackets than the
    limit in all and is answered by two counts.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    steps = _JSON_STRING.sub(b"", body).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit
