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
import time as _time
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
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    LIMIT_REACHED = "LIMIT_REACHED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    STORAGE_BUSY = "STORAGE_BUSY"
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
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
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.SANDBOX_UNAVAILABLE: 503,
    ErrorCode.PROVIDER_AUTH_FAILED: 502,
    ErrorCode.PROVIDER_RATE_LIMITED: 429,
    ErrorCode.PROVIDER_UNAVAILABLE: 502,
    ErrorCode.PROVIDER_TIMEOUT: 504,
    ErrorCode.PROVIDER_BAD_RESPONSE: 502,
    ErrorCode.PROVIDER_BAD_REQUEST: 502,
}

# Browsers cannot set headers on a WebSocket: they offer the credential as a subprotocol
# ``llmgine.bearer.<TOKEN>`` next to ``llmgine``, which the daemon selects.
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
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC."""
    value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
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


class EventCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}


class EventList(msgspec.Struct):
    events: list[Event]
    total: int
    limit: int
    offset: int
    # The seq to pass as ``after`` for the next page (the last seq returned, else the ``after``
    # that was given): a client tailing the log polls with it and misses nothing.
    next_after: int | None


EVENT_SOURCES = ("api", "engine", "handler", "bus")

# -- commands ----------------------------------------------------------------------------

CommandStatus = Literal[
    "queued", "executing", "completed", "failed", "timed_out", "cancelled", "interrupted"
]
COMMAND_STATUSES: tuple[str, ...] = (
    "queued", "executing", "completed", "failed", "timed_out", "cancelled", "interrupted"
)
TERMINAL_STATUSES = frozenset({"completed", "failed", "timed_out", "cancelled", "interrupted"})
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")


class CommandCreate(msgspec.Struct, forbid_unknown_fields=True):
    command_type: str
    parameters: dict[str, Any] = {}
    # Open for the caller's own keys; ``priority`` (high|normal|low) and ``timeout`` (seconds)
    # are checked by the API.
    metadata: dict[str, Any] = {}


class Command(msgspec.Struct, kw_only=True):
    command_id: str
    status: str
    result: Any = None
    error: ErrorBody | None = None
    created_at: str
    session_id: str
    command_type: str
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    priority: str = "normal"
    timeout: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    batch_id: str | None = None
    # The trace of the request that submitted it (GET /api/observability/traces/{trace_id}).
    trace_id: str | None = None


class CommandList(msgspec.Struct):
    commands: list[Command]
    total: int
    limit: int
    offset: int


BatchMode = Literal["parallel", "sequential"]


class BatchCreate(msgspec.Struct, forbid_unknown_fields=True):
    commands: list[CommandCreate]
    mode: BatchMode = "parallel"
    stop_on_error: bool = False


class Batch(msgspec.Struct):
    batch_id: str
    session_id: str
    mode: str
    stop_on_error: bool
    status: str  # queued | executing | finished
    created_at: str
    commands: list[Command]


# -- engines -----------------------------------------------------------------------------


class EngineCreate(msgspec.Struct, forbid_unknown_fields=True):
    engine_type: str
    session_id: str
    model_name: str | None = None
    configuration: dict[str, Any] = {}


class Engine(msgspec.Struct, kw_only=True):
    engine_id: str
    engine_type: str
    model_name: str | None
    status: str  # initialized | stopped
    session_id: str
    configuration: dict[str, Any]
    created_at: str
    command_type: str


class EngineList(msgspec.Struct):
    engines: list[Engine]
    total: int
    limit: int
    offset: int


class EngineConfigField(msgspec.Struct):
    name: str
    type: str  # integer | number | boolean | string
    default: Any
    description: str


class EngineType(msgspec.Struct):
    engine_type: str
    command_type: str
    description: str
    configuration: list[EngineConfigField]


class EngineTypeList(msgspec.Struct):
    types: list[EngineType]


class EngineExecute(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str
    parameters: dict[str, Any] = {}
    metadata: dict[str, Any] = {}


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


class DbTable(msgspec.Struct):
    name: str
    rows: int
    # Pages of the table and its indexes (SQLite's dbstat), in bytes.
    size_bytes: int
    index_bytes: int


class DbStats(msgspec.Struct):
    backend: str
    path: str
    # The database file plus its -wal and -shm files.
    size_bytes: int
    file_bytes: dict[str, int]
    page_size: int
    page_count: int
    freelist_pages: int
    journal_mode: str
    synchronous: str
    tables: list[DbTable]
    retention: dict[str, Any] = {}


class VacuumResult(msgspec.Struct):
    before_bytes: int
    after_bytes: int
    reclaimed_bytes: int
    duration_ms: float


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


# -- credentials (api/auth.py) ----------------------------------------------------------

KeyState = Literal["active", "expired", "revoked"]


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    # Seconds from now, or an absolute ISO 8601 time; at most one of them.
    expires_in: int | None = None
    expires_at: str | None = None


class ApiKeyInfo(msgspec.Struct):
    key_id: str
    name: str | None
    prefix: str
    kind: str
    state: str
    created_at: str
    last_used_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None


class ApiKeyCreated(msgspec.Struct):
    key_id: str
    name: str | None
    prefix: str
    created_at: str
    expires_at: str | None
    # The only time the key is ever shown: only its hash is stored.
    key: str


class ApiKeyList(msgspec.Struct):
    keys: list[ApiKeyInfo]
    total: int


class SessionTokenCreated(msgspec.Struct):
    session_id: str
    session_token: str
    created_at: str


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
# -- tools (spec section 5) ---------------------------------------------------------------


class ToolCreate(msgspec.Struct, forbid_unknown_fields=True):
    function_code: str
    # default: the last function the code defines (found by the sandbox, never by the daemon)
    name: str | None = None
    description: str | None = None  # default: the docstring's first paragraph
    # {param: {type, description}} as in the spec, or a full JSON Schema; default: derived
    # from the signature's type hints and the docstring.
    parameters: dict[str, Any] | None = None
    timeout: float | None = None  # seconds; default sandbox.deadline


class Tool(msgspec.Struct):
    name: str
    session_id: str
    description: str
    parameters: dict[str, Any]  # JSON Schema
    is_async: bool
    timeout: float | None
    created_at: str
    function_code: str | None = None  # only when one tool is read


class ToolList(msgspec.Struct):
    tools: list[Tool]
    total: int


class ToolExecute(msgspec.Struct, forbid_unknown_fields=True):
    arguments: dict[str, Any] = {}
    timeout: float | None = None


class ToolResult(msgspec.Struct):
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    duration_ms: float
    output: str = ""
    output_truncated: bool = False


# -- handlers (spec section 6) ------------------------------------------------------------

HandlerKind = Literal["command", "event"]


class CommandHandlerCreate(msgspec.Struct, forbid_unknown_fields=True):
    command_type: str
    handler_function: str
    timeout: float | None = None


class EventHandlerCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str  # or "*" for every event
    handler_function: str
    priority: int = 100  # lower runs first
    timeout: float | None = None


class Handler(msgspec.Struct):
    handler_id: str
    kind: str  # command | event
    type: str  # the command_type or event_type
    scope: str  # session | global
    session_id: str | None
    function: str
    priority: int
    timeout: float | None
    created_at: str
    handler_function: str | None = None  # the source, only when one handler is read


class HandlerList(msgspec.Struct):
    handlers: list[Handler]
    total: int
# -- engine conversations (LLM engines' memory) --------------------------------------------


class EngineMessage(msgspec.Struct, kw_only=True):
    message_id: int
    role: str  # user | assistant | tool
    content: str
    # Assistant messages that called tools: [{"id", "name", "arguments"}].
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None  # tool results: the call they answer
    name: str | None = None  # tool results: the tool's name
    partial: bool = False  # an answer cut short (cancelled, timed out): what had arrived
    is_error: bool = False  # a tool result that is an error
    command_id: str | None = None
    created_at: str


class EngineMessageList(msgspec.Struct):
    engine_id: str
    messages: list[EngineMessage]
    total: int
    limit: int
    offset: int


class EngineReset(msgspec.Struct):
    engine_id: str
    deleted: int
