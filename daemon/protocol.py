"""Wire models and error codes: the one definition, shared by the daemon and the client.

Only msgspec and the standard library may be imported here: the CLI imports this module on
every invocation.

Conventions:
- Timestamps are ISO 8601 UTC strings with microseconds and a ``Z`` suffix; they sort as text.
- Identifiers are UUID4 strings.
- Request models use ``forbid_unknown_fields`` so a typo in a field name is a VALIDATION_ERROR,
  not a silently ignored value.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

import msgspec

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
    STORAGE_BUSY = "STORAGE_BUSY"
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


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
    ErrorCode.STORAGE_BUSY: 503,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    ErrorCode.INTERNAL_ERROR: 500,
}

# The header the daemon stamps on every response so a client can report a version mismatch.
VERSION_HEADER = "X-Llmgine-Version"
REQUEST_ID_HEADER = "X-Request-ID"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> _dt.datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC."""
    value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC)


def to_iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- errors ------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody
    timestamp: str
    request_id: str


# -- sessions ----------------------------------------------------------------------------

SessionStatus = Literal["active", "closed"]


class SessionCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    metadata: dict[str, Any] = {}


class SessionCounts(msgspec.Struct):
    commands: int = 0
    events: int = 0
    engines: int = 0
    tools: int = 0
    handlers: int = 0


class Session(msgspec.Struct):
    session_id: str
    name: str | None
    metadata: dict[str, Any]
    status: str
    created_at: str
    last_activity_at: str
    ended_at: str | None = None
    counts: SessionCounts | None = None
    # Returned once, by the request that created the session (see the security model).
    session_token: str | None = None


class SessionList(msgspec.Struct):
    sessions: list[Session]
    total: int
    limit: int
    offset: int


# -- events ------------------------------------------------------------------------------


class Event(msgspec.Struct):
    event_id: str
    seq: int
    session_id: str | None
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: str
    source: str
    trace_id: str | None = None


# -- system ------------------------------------------------------------------------------


class Health(msgspec.Struct):
    status: str
    timestamp: str
    version: str
    uptime: float


class StorageInfo(msgspec.Struct):
    backend: str
    path: str
    size_bytes: int


class StatusCounts(msgspec.Struct):
    sessions: int
    active_sessions: int
    commands: int
    events: int
    engines: int


class Status(msgspec.Struct):
    status: str
    version: str
    uptime: float
    pid: int
    started_at: str
    listeners: list[str]
    storage: StorageInfo
    counts: StatusCounts
    sandbox: dict[str, Any] = {}


class ConfigValue(msgspec.Struct):
    key: str
    env: str
    value: Any
    source: str


class ConfigView(msgspec.Struct):
    config_file: str
    settings: list[ConfigValue]


class ShutdownAccepted(msgspec.Struct):
    status: str
    message: str


# -- observability -----------------------------------------------------------------------

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class LogRecord(msgspec.Struct):
    id: int
    timestamp: str
    level: str
    logger: str
    message: str
    # "daemon" for the daemon's own records, "client" for POST /api/observability/logs,
    # "handler" / "tool" for user code's bus.log().
    source: str = "daemon"
    session_id: str | None = None
    command_id: str | None = None
    engine_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    metadata: dict[str, Any] = {}


class LogCreate(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    level: LogLevel = "info"
    metadata: dict[str, Any] = {}
    # Extensions to the spec's body: attach the record to a session / name its logger.
    session_id: str | None = None
    logger: str | None = None


class LogList(msgspec.Struct):
    logs: list[LogRecord]
    limit: int
    # Pass as ?after= to get only newer records (what `llmgine logs -f` polls with).
    next_after: int | None = None


class MetricSeries(msgspec.Struct, omit_defaults=True):
    labels: dict[str, str] = {}
    # counters and gauges
    value: float | None = None
    # histograms (seconds, or items for sizes); percentiles are estimates from fixed buckets
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class MetricFamily(msgspec.Struct):
    name: str
    type: str
    help: str
    series: list[MetricSeries]


class MetricsSnapshot(msgspec.Struct):
    timestamp: str
    enabled: bool
    uptime: float
    session_id: str | None
    metrics: list[MetricFamily]


class SpanNode(msgspec.Struct):
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start: str
    # milliseconds from the start of the trace's earliest span
    offset_ms: float
    duration_ms: float
    status: str
    error: str | None = None
    attributes: dict[str, Any] = {}
    children: list[SpanNode] = []


class TraceView(msgspec.Struct):
    trace_id: str
    root: str
    start: str
    duration_ms: float
    status: str
    span_count: int
    spans: list[SpanNode]


class TraceSummary(msgspec.Struct):
    trace_id: str
    root: str
    start: str
    duration_ms: float
    status: str
    span_count: int
    session_id: str | None = None


class TraceList(msgspec.Struct):
    traces: list[TraceSummary]
    limit: int
