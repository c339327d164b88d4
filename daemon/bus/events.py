"""The event log: one append-only table, a global strictly increasing ``seq``.

``insert_event`` runs inside a write transaction (so a caller can record an event atomically
with the change it describes); ``EventLog.notify`` hands committed events to live listeners
(streams) in seq order.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

from llmgine_daemon.bus.codec import dumps, loads
from llmgine_daemon.observability import metrics
from llmgine_daemon.observability.context import current_trace_id
from llmgine_daemon.protocol import Event, now_iso

EVENT_COLUMNS = (
    "event_id, seq, session_id, event_type, data, metadata, timestamp, source, trace_id"
)

Listener = Callable[[Event], None]


def insert_event(
    conn: sqlite3.Connection,
    session_id: str | None,
    event_type: str,
    data: dict[str, Any] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    source: str = "bus",
    trace_id: str | None = None,
    timestamp: str | None = None,
) -> Event:
    event_id = str(uuid.uuid4())
    ts = timestamp or now_iso()
    # Store.write runs this in the caller's context, so the event joins the caller's trace.
    trace_id = trace_id or current_trace_id()
    data = data or {}
    metadata = metadata or {}
    cur = conn.execute(
        "INSERT INTO events (event_id, session_id, event_type, data, metadata, source,"
        " timestamp, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, session_id, event_type, dumps(data), dumps(metadata), source, ts, trace_id),
    )
    if session_id is not None:
        conn.execute(
            "UPDATE sessions SET last_activity_at = ? WHERE session_id = ?", (ts, session_id)
        )
    seq = cur.lastrowid
    assert seq is not None
    return Event(
        event_id=event_id,
        seq=seq,
        session_id=session_id,
        event_type=event_type,
        data=data,
        metadata=metadata,
        timestamp=ts,
        source=source,
        trace_id=trace_id,
    )


def row_to_event(row: tuple[Any, ...]) -> Event:
    return Event(
        event_id=row[0],
        seq=row[1],
        session_id=row[2],
        event_type=row[3],
        data=loads(row[4]),
        metadata=loads(row[5]),
        timestamp=row[6],
        source=row[7],
        trace_id=row[8],
    )


class EventLog:
    """Live fan-out of committed events. Listeners must not block: they get the event and
    queue it (streams keep bounded queues and catch up from the store)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, events: list[Event]) -> None:
        for event in sorted(events, key=lambda e: e.seq):
            metrics.inc("events_published_total", type=event.event_type)
            for listener in list(self._listeners):
                listener(event)
