"""System, database, credentials and observability on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from llmgine_daemon.protocol.grammar import Id, KeyLifetime, KeyName, LogMessage, SecretValue, Timestamp

# -- system ------------------------------------------------------------------------------


# degraded: the database could not be reached, or the disk is full (api/system.py).
HealthStatus = Literal["healthy", "degraded", "shutting_down"]
DaemonStatus = Literal["running", "shutting_down"]


class Health(msgspec.Struct):
    status: HealthStatus
    timestamp: Timestamp
    version: str
    # Whole seconds, as the API contract's health answer (`"uptime": 3600`); /api/status has
    # the fractional figure.
    uptime: int


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
    # "main", or "telemetry": logs and spans are in a file of their own (telemetry_path).
    database: str = "main"


class DbStats(msgspec.Struct):
    backend: str
    path: str
    # The database file plus its -wal and -shm files, and the telemetry database's three
    # (file_bytes: db, wal, shm, telemetry_db, telemetry_wal, telemetry_shm).
    size_bytes: int
    file_bytes: dict[str, int]
    page_size: int
    page_count: int
    freelist_pages: int
    journal_mode: str
    synchronous: str
    tables: list[DbTable]
    retention: dict[str, Any] = {}
    telemetry_path: str = ""


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


class ClusterNode(msgspec.Struct):
    """A daemon sharing the database (``cluster_nodes``); ``leases``: sessions it runs now."""

    node_id: str
    host: str
    pid: int
    started_at: Timestamp
    # Its last heartbeat (ISO time); None on the one-node (SQLite) backend, which has none.
    heartbeat_at: Timestamp | None
    leases: int


class ClusterInfo(msgspec.Struct):
    """The nodes that share this daemon's bus: only this one on SQLite."""

    backend: str
    node_id: str
    lease_timeout: float
    nodes: list[ClusterNode]


class Status(msgspec.Struct):
    status: DaemonStatus
    version: str
    uptime: float
    pid: int
    started_at: Timestamp
    listeners: list[str]
    storage: StorageInfo
    counts: StatusCounts
    sandbox: dict[str, Any] = {}
    cluster: ClusterInfo | None = None


class ConfigValue(msgspec.Struct):
    key: str
    env: str
    value: Any
    source: str


class ConfigView(msgspec.Struct):
    config_file: str
    settings: list[ConfigValue]


class ShutdownAccepted(msgspec.Struct):
    status: Literal["shutting_down"]
    message: str


# -- credentials (api/auth.py) ----------------------------------------------------------

KeyState = Literal["active", "expired", "revoked"]


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: KeyName | None = None
    # Seconds from now, or an absolute ISO 8601 time; at most one of them.
    expires_in: KeyLifetime | None = None
    expires_at: Timestamp | None = None


class ApiKeyInfo(msgspec.Struct):
    key_id: str
    name: str | None
    prefix: str
    kind: str
    state: KeyState
    created_at: Timestamp
    last_used_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None


class ApiKeyCreated(msgspec.Struct):
    key_id: str
    name: str | None
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    # The only time the key is ever shown: only its hash is stored.
    key: str


class ApiKeyList(msgspec.Struct):
    keys: list[ApiKeyInfo]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0


class SessionTokenCreated(msgspec.Struct):
    session_id: str
    session_token: str
    created_at: Timestamp


# -- observability -----------------------------------------------------------------------

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
# Also taken for one: "warn" and "fatal" (as Python's logging and most log libraries name them).
LEVEL_ALIASES = {"warn": "warning", "fatal": "critical"}
# A level as a client writes it: in any case ("INFO", as the contract's LOG_LEVEL=INFO), the
# aliases too; stored and answered as its LogLevel (``log_level``).
LevelName = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={
            "enum": [*LOG_LEVELS, *LEVEL_ALIASES],
            "description": "a level, in any case (`INFO` is `info`); `warn` is `warning`, `fatal` is `critical`",
        }
    ),
]


def log_level(raw: str) -> LogLevel | None:
    """``raw`` (any case, an alias) as its LogLevel; None if it names none."""
    lowered = raw.strip().lower()
    lowered = LEVEL_ALIASES.get(lowered, lowered)
    return lowered if lowered in LOG_LEVELS else None  # type: ignore[return-value]


class LogRecord(msgspec.Struct):
    id: int
    timestamp: Timestamp
    level: LogLevel
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
    message: LogMessage
    level: LevelName = "info"
    metadata: dict[str, Any] = {}
    # Extensions to the spec's body: attach the record to a session / name its logger.
    session_id: Id | None = None
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
    timestamp: Timestamp
    enabled: bool
    uptime: float
    session_id: str | None
    metrics: list[MetricFamily]


# A span failed (an exception, a 5xx) or not; a trace is "error" if any of its spans is.
SpanStatus = Literal["ok", "error"]


class SpanNode(msgspec.Struct):
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start: Timestamp
    # milliseconds from the start of the trace's earliest span
    offset_ms: float
    duration_ms: float
    status: SpanStatus
    error: str | None = None
    attributes: dict[str, Any] = {}
    children: list[SpanNode] = []


class TraceView(msgspec.Struct):
    trace_id: str
    root: str
    start: Timestamp
    duration_ms: float
    status: SpanStatus
    span_count: int
    spans: list[SpanNode]


class TraceSummary(msgspec.Struct):
    trace_id: str
    root: str
    start: Timestamp
    duration_ms: float
    status: SpanStatus
    span_count: int
    session_id: str | None = None


class TraceList(msgspec.Struct):
    traces: list[TraceSummary]
    limit: int


class SecretSet(msgspec.Struct, forbid_unknown_fields=True):
    value: SecretValue


class SecretInfo(msgspec.Struct):
    name: str
    updated_at: Timestamp


class SecretList(msgspec.Struct):
    secrets: list[SecretInfo]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0
