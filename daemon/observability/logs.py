"""Structured logs: one record shape for the log file, stderr and the ``logs`` table.

Every record carries time, level, logger and message, plus whatever the context knows:
session_id, command_id, engine_id, request_id (``context.FIELDS``) and trace_id/span_id (the
current span). ``ContextFilter`` stamps them on the record where it is created, so code deep
in the bus needs no extra arguments. ``extra={"metadata": {...}}`` adds free-form fields.

``StoreHandler`` keeps records in a bounded in-memory buffer; ``Observability`` writes the
buffer to SQLite in one transaction every ``FLUSH_INTERVAL`` (never one transaction per
record) and prunes past the retention bounds.

Secrets: metadata keys that look like credentials are replaced, and bearer tokens are masked
in messages, before a record is written anywhere.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections import deque
from typing import Any

import msgspec
from llmgine_daemon.observability import metrics
from llmgine_daemon.observability.context import CURRENT_SPAN, FIELD_NAMES, FIELDS
from llmgine_daemon.observability.redact import redact
from llmgine_daemon.protocol import LogRecord
from llmgine_daemon.textsafe import CONTROL_ESCAPES, NUL, without_nul

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
MAX_BUFFER = 20_000
MAX_MESSAGE = 16_384

_SECRET_KEY = re.compile(r"(?i)(authorization|token|secret|password|api[_-]?key|cookie)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{4,}")
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8})[A-Za-z0-9_\-]+")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def level_name(levelno: int) -> str:
    return LEVEL_NAMES.get(levelno - levelno % 10, "debug" if levelno < 10 else "critical")


def scrub_text(text: str) -> str:
    # redact(): our own credential shapes (lgk_/lgs_ secrets, token=, llmgine.bearer.).
    return redact(_KEYLIKE.sub(r"\1…", _BEARER.sub(r"\1[redacted]", text)))


def scrub_metadata(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {
            str(k): "[redacted]" if _SECRET_KEY.search(str(k)) else scrub_metadata(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub_metadata(v, depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub_text(repr(value))


class ContextFilter(logging.Filter):
    """Stamp the context's fields and the current span on each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "lg_fields"):
            fields = dict(FIELDS.get())
            for name in FIELD_NAMES:  # explicit extra={"session_id": ...} wins over the context
                explicit = record.__dict__.get(name)
                if explicit is not None:
                    fields[name] = str(explicit)
            span = CURRENT_SPAN.get()
            if span is not None:
                fields.setdefault("trace_id", span.trace_id)
                fields.setdefault("span_id", span.span_id)
            record.lg_fields = fields
        return True


def to_record(record: logging.LogRecord) -> LogRecord:
    fields: dict[str, str] = getattr(record, "lg_fields", {})
    message = record.getMessage()
    metadata = getattr(record, "metadata", None)
    meta = scrub_metadata(dict(metadata)) if isinstance(metadata, dict) else {}
    if record.exc_info and record.exc_info[0] is not None:
        meta["exception"] = scrub_text(logging.Formatter().formatException(record.exc_info))[-MAX_MESSAGE:]
    return LogRecord(
        id=0,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs * 1000):06d}Z",
        level=level_name(record.levelno),
        logger=record.name,
        message=scrub_text(message)[:MAX_MESSAGE],
        source=getattr(record, "source", "daemon"),
        session_id=fields.get("session_id"),
        command_id=fields.get("command_id"),
        engine_id=fields.get("engine_id"),
        request_id=fields.get("request_id"),
        trace_id=fields.get("trace_id"),
        span_id=fields.get("span_id"),
        metadata=meta,
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the same fields the API returns (minus the store's id)."""

    def format(self, record: logging.LogRecord) -> str:
        item = msgspec.structs.asdict(to_record(record))
        del item["id"]
        return _encoder.encode({k: v for k, v in item.items() if v not in (None, {})}).decode()


_CONTROL_ESCAPES = CONTROL_ESCAPES  # (textsafe.py: the CLI shows data with the same table)


class TextFormatter(logging.Formatter):
    """For a human at a terminal: the usual line, then the known context as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        rec = to_record(record)
        extras = [
            f"{name}={value}"
            for name, value in (
                ("session", rec.session_id),
                ("command", rec.command_id),
                ("engine", rec.engine_id),
                ("trace", rec.trace_id),
                ("request", rec.request_id),
            )
            if value
        ]
        # The message may be a client's text (POST /api/observability/logs) or user code's
        # error: its control characters are written as escapes, so it cannot forge a line of
        # this log nor send a terminal escape to whoever tails it (the traceback below is ours).
        line = f"{rec.timestamp} {rec.level.upper():<8} {rec.logger}: {rec.message.translate(_CONTROL_ESCAPES)}"
        if extras:
            line += "  [" + " ".join(extras) + "]"
        if "exception" in rec.metadata:
            line += "\n" + str(rec.metadata["exception"])
        return line


class StoreHandler(logging.Handler):
    """Buffers records for the ``logs`` table; thread-safe, bounded, never blocks."""

    def __init__(self, level: int, max_buffer: int = MAX_BUFFER) -> None:
        super().__init__(level)
        self.max_buffer = max_buffer
        self._buffer: deque[LogRecord] = deque()
        self._buffer_lock = threading.Lock()
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "lg_stored", False):
            return  # already written by the API (POST /api/observability/logs)
        try:
            item = to_record(record)
        except Exception:
            self.handleError(record)
            return
        metrics.inc("log_records_total", level=item.level)
        with self._buffer_lock:
            if len(self._buffer) >= self.max_buffer:
                metrics.inc("telemetry_dropped_total", kind="log")
                return
            self._buffer.append(item)

    def drain(self) -> list[LogRecord]:
        with self._buffer_lock:
            items = list(self._buffer)
            self._buffer.clear()
        return items


# -- SQL (run inside Store.write / Store.read) ----------------------------------------------

LOG_COLUMNS = (
    "id, timestamp, level, logger, message, source, session_id, command_id, engine_id,"
    " request_id, trace_id, span_id, metadata"
)


# The record's text columns (its metadata is stored as JSON, where a NUL is an escape).
_TEXT_FIELDS = (
    "message",
    "logger",
    "source",
    "session_id",
    "command_id",
    "engine_id",
    "request_id",
    "trace_id",
    "span_id",
)


def insert_logs(
    conn: sqlite3.Connection,
    records: list[LogRecord],
    max_rows: int,
    sessions: list[str] | None = None,
    session_rows: int = 0,
) -> list[int]:
    """Write ``records``; then trim each of ``sessions`` to its newest ``session_rows``
    (``trim_sessions``), then the table to its newest ``max_rows`` (0: not now)."""
    ids = []
    for r in records:
        if any(NUL in (getattr(r, f) or "") for f in _TEXT_FIELDS):
            r = msgspec.structs.replace(r, **{f: without_nul(getattr(r, f)) for f in _TEXT_FIELDS})
        cur = conn.execute(
            "INSERT INTO logs (timestamp, level, levelno, logger, message, source, session_id,"
            " command_id, engine_id, request_id, trace_id, span_id, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.timestamp,
                r.level,
                LEVELS[r.level],
                r.logger,
                r.message,
                r.source,
                r.session_id,
                r.command_id,
                r.engine_id,
                r.request_id,
                r.trace_id,
                r.span_id,
                _encoder.encode(r.metadata).decode() if r.metadata else "{}",
            ),
        )
        assert cur.lastrowid is not None
        ids.append(cur.lastrowid)
    if sessions and session_rows > 0:
        # First: a session's flood in this very batch must not count against everyone's rows.
        trim_sessions(conn, "logs", sessions, session_rows)
    if ids and max_rows > 0:
        keep_newest(conn, "logs", max_rows)
    return ids


# The telemetry tables whose rows are trimmed to a count (logs here, spans in trace_store.py).
_TRIMMED = ("logs", "spans")


def trim_sessions(conn: sqlite3.Connection, table: str, session_ids: list[str], max_rows: int) -> int:
    """Keep only the newest ``max_rows`` rows of ``table`` of each of ``session_ids``
    (``security.limits.session_log_rows``, ``session_span_rows``): a session writing without
    end pushes out its own records, not everyone's. Returns how many went."""
    assert table in _TRIMMED
    gone = 0
    for session_id in session_ids:
        row = conn.execute(
            f"SELECT id FROM {table} WHERE session_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?", (session_id, max_rows)
        ).fetchone()
        if row is not None:
            gone += conn.execute(f"DELETE FROM {table} WHERE session_id = ? AND id <= ?", (session_id, row[0])).rowcount
    return gone


def keep_newest(conn: sqlite3.Connection, table: str, max_rows: int) -> None:
    """Keep the newest ``max_rows`` rows of ``table``: counted, since ids have gaps where a
    session's own oldest rows went (``trim_sessions``). Its callers ask once per many rows."""
    assert table in _TRIMMED
    row = conn.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)).fetchone()
    if row is not None:
        conn.execute(f"DELETE FROM {table} WHERE id <= ?", (row[0],))


def prune_logs_before(conn: sqlite3.Connection, cutoff_iso: str) -> int:
    return conn.execute("DELETE FROM logs WHERE timestamp < ?", (cutoff_iso,)).rowcount


def row_to_log(row: tuple[Any, ...]) -> LogRecord:
    return LogRecord(
        id=row[0],
        timestamp=row[1],
        level=row[2],
        logger=row[3],
        message=row[4],
        source=row[5],
        session_id=row[6],
        command_id=row[7],
        engine_id=row[8],
        request_id=row[9],
        trace_id=row[10],
        span_id=row[11],
        metadata=_decoder.decode(row[12]) if row[12] else {},
    )


def query_logs(
    conn: sqlite3.Connection,
    *,
    level: str | None = None,
    session_id: str | None = None,
    command_id: str | None = None,
    trace_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    q: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[LogRecord]:
    """Matching records, oldest first: the newest ``limit`` of them, or with ``after`` (a
    cursor: the last id seen) the first ``limit`` newer than it - what ``logs -f`` polls."""
    where: list[str] = []
    params: list[Any] = []
    if level:
        where.append("levelno >= ?")
        params.append(LEVELS[level])
    for column, value in (("session_id", session_id), ("command_id", command_id), ("trace_id", trace_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since:
        where.append("timestamp >= ?")
        params.append(since)
    if until:
        where.append("timestamp < ?")
        params.append(until)
    if q:
        where.append("(instr(lower(message), ?) > 0 OR instr(lower(logger), ?) > 0)")
        params.extend([q.lower(), q.lower()])
    if after is not None:
        where.append("id > ?")
        params.append(after)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    order = "ASC" if after is not None else "DESC"
    rows = conn.execute(
        f"SELECT {LOG_COLUMNS} FROM logs {clause} ORDER BY id {order} LIMIT ?", (*params, limit)
    ).fetchall()
    if order == "DESC":
        rows.reverse()
    return [row_to_log(r) for r in rows]


_user_log = logging.getLogger("llmgine.user")


def emit(
    level: str,
    message: str,
    metadata: dict[str, Any] | None = None,
    *,
    source: str = "handler",
    logger: logging.Logger | None = None,
) -> None:
    """Log on behalf of user code (``bus.log`` in handlers and tools): it lands in the log
    file and the ``logs`` table with the session/command bound around the call."""
    levelno = LEVELS.get(level.lower(), logging.INFO)
    (logger or _user_log).log(
        levelno, "%s", message[:MAX_MESSAGE], extra={"source": source, "metadata": metadata or {}}
    )
