"""Stored spans: insert with bounded retention, read back as a tree or a list of traces.
(``tracing.py`` is the API that makes the spans.)"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import msgspec
from llmgine_daemon.observability.logs import keep_newest, trim_sessions
from llmgine_daemon.observability.tracing import SpanRow
from llmgine_daemon.protocol import SpanNode, TraceList, TraceSummary, TraceView
from llmgine_daemon.textsafe import without_nul

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

SPAN_COLUMNS = (
    "trace_id, span_id, parent_id, name, kind, start, start_unix, duration_ms, status, error,"
    " attributes, session_id, local_root"
)


_second: tuple[int, str] = (0, "")


def iso_from_unix(ts: float) -> str:
    # The part up to the second is formatted once per second: spans come by thousands.
    global _second
    whole = int(ts)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((ts - whole) * 1e6):06d}Z"


# Every span of a flush in ONE statement: the rows go in as one JSON array (one msgspec encode)
# that SQLite takes apart itself (json_each). The flush is a heavy write, run in the store's
# thread: one call that holds no GIL while SQLite works, so it runs beside the event loop.
_INSERT = (
    f"INSERT INTO spans ({SPAN_COLUMNS}) SELECT value->>0, value->>1, value->>2, value->>3,"
    " value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10, value->>11,"
    " value->>12 FROM json_each(?)"
)


def insert_spans(
    conn: sqlite3.Connection,
    spans: list[SpanRow],
    max_rows: int,
    sessions: list[str] | None = None,
    session_rows: int = 0,
) -> None:
    """``spans`` are the tracer's buffered tuples (``tracing.SpanRow``); the ISO start and the
    JSON are made here, in the telemetry writer's thread, not on the event loop. Then each of
    ``sessions`` is trimmed to its newest ``session_rows`` (``logs.trim_sessions``), and the
    table to its newest ``max_rows`` (0: not now): counted when sessions are trimmed (their
    trims leave gaps in the ids), else by id."""
    if not spans:
        return
    rows = _encoder.encode(
        [
            (tid, sid, pid, name, kind, iso_from_unix(start), start, dur, status, err, attrs, session, root)
            for tid, sid, pid, name, kind, start, dur, status, err, attrs, session, root in spans
        ]
    )
    if b"\\u0000" in rows:  # a NUL in a name, an error, an attribute: PostgreSQL refuses it
        rows = _encoder.encode(without_nul(_decoder.decode(rows)))
    conn.execute(_INSERT, (rows.decode(),))
    if sessions and session_rows > 0:
        trim_sessions(conn, "spans", sessions, session_rows)
    if max_rows > 0 and session_rows > 0:
        keep_newest(conn, "spans", max_rows)
    elif max_rows > 0:
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        conn.execute("DELETE FROM spans WHERE id <= ?", (last - max_rows,))


def prune_spans_before(conn: sqlite3.Connection, cutoff_unix: float) -> int:
    return conn.execute("DELETE FROM spans WHERE start_unix < ?", (cutoff_unix,)).rowcount


def read_trace(conn: sqlite3.Connection, trace_id: str) -> TraceView | None:
    rows = conn.execute(
        f"SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_unix, id", (trace_id,)
    ).fetchall()
    if not rows:
        return None
    t0 = min(r[6] for r in rows)
    end_ms = max(r[6] * 1000 + r[7] for r in rows)
    nodes: dict[str, SpanNode] = {}
    order: list[SpanNode] = []
    for r in rows:
        node = SpanNode(
            span_id=r[1],
            parent_id=r[2],
            name=r[3],
            kind=r[4],
            start=r[5],
            offset_ms=round((r[6] - t0) * 1000, 3),
            duration_ms=round(r[7], 3),
            status=r[8],
            error=r[9],
            attributes=_decoder.decode(r[10]) if r[10] else {},
            children=[],
        )
        nodes[node.span_id] = node
        order.append(node)
    roots: list[SpanNode] = []
    for node in order:  # already in start order, so children come out sorted too
        parent = nodes.get(node.parent_id) if node.parent_id else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    return TraceView(
        trace_id=trace_id,
        root=roots[0].name,
        start=iso_from_unix(t0),
        duration_ms=round(end_ms - t0 * 1000, 3),
        status="error" if any(r[8] == "error" for r in rows) else "ok",
        span_count=len(rows),
        spans=roots,
    )


def list_traces(
    conn: sqlite3.Connection,
    *,
    session_id: str | None,
    since_unix: float | None,
    status: str | None,
    limit: int,
) -> TraceList:
    """Recent traces, newest first, each summarised by its first local root span."""
    where = ["local_root = 1"]
    params: list[Any] = []
    if since_unix is not None:
        where.append("start_unix >= ?")
        params.append(since_unix)
    if session_id:
        where.append("trace_id IN (SELECT trace_id FROM spans WHERE session_id = ?)")
        params.append(session_id)
    # Each trace's first local root span (portable SQL: no bare columns beside an aggregate).
    roots = conn.execute(
        "SELECT s.trace_id, s.name, s.session_id, s.start_unix FROM spans s JOIN"
        f" (SELECT trace_id, MIN(start_unix) AS first FROM spans WHERE {' AND '.join(where)} GROUP BY trace_id) f"
        " ON s.trace_id = f.trace_id AND s.start_unix = f.first AND s.local_root = 1"
        " ORDER BY f.first DESC, s.id",
        params,
    )
    traces: list[TraceSummary] = []
    seen: set[str] = set()
    for trace_id, name, root_session, _ in roots:
        if trace_id in seen:  # two roots started in the same microsecond
            continue
        seen.add(trace_id)
        count, t0, t1, errors, any_session = conn.execute(
            "SELECT COUNT(*), MIN(start_unix), MAX(start_unix * 1000.0 + duration_ms),"
            " MAX(CASE WHEN status = 'error' THEN 1 ELSE 0 END), MAX(session_id) FROM spans WHERE trace_id = ?",
            (trace_id,),
        ).fetchone()
        trace_status = "error" if errors else "ok"
        if status and trace_status != status:
            continue
        traces.append(
            TraceSummary(
                trace_id=trace_id,
                root=name,
                start=iso_from_unix(t0),
                duration_ms=round(t1 - t0 * 1000, 3),
                status=trace_status,
                span_count=count,
                session_id=root_session or any_session,
            )
        )
        if len(traces) >= limit:
            break
    return TraceList(traces=traces, limit=limit)
