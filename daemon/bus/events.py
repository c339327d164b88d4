"""The event log: one append-only table, a global strictly increasing ``seq``.

``insert_event`` runs inside a write transaction (so a caller can record an event atomically
with the change it describes); ``EventLog.notify`` hands committed events to live listeners
(streams) in seq order. ``EventLog.publish/list/get`` serve the Events API.

Listing pages two ways over the same filters: by ``offset`` (the spec) and by ``after`` (a seq
cursor, stable while the log grows). ``event_type`` ending in ``*`` is a prefix match.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.capacity import event_bytes_reached
from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.errors import invalid, not_found
from llmgine_daemon.bus.idempotency import IdempotencyKey, lookup, record
from llmgine_daemon.bus.pages import LongPage, read_rows
from llmgine_daemon.observability import metrics
from llmgine_daemon.observability.context import current_trace_id
from llmgine_daemon.protocol import Event, EventList, now_iso
from llmgine_daemon.protocol.grammar import EVENT_LIST_TYPE_RE, EVENT_LIST_TYPE_RULE, TYPE_RE, TYPE_RULE

if TYPE_CHECKING:
    from llmgine_daemon.store.db import Store

EVENT_COLUMNS = "event_id, seq, session_id, event_type, data, metadata, timestamp, source, trace_id"

Listener = Callable[[Event], None]
# Told once per commit with that commit's events of a session, in seq order (EventLog.subscribe_batch).
BatchListener = Callable[[list[Event]], None]


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
    cap: int = 0,
) -> Event:
    event = _insert_event(conn, session_id, event_type, data, metadata, source, trace_id, timestamp, cap=cap)
    assert event is not None  # always written without if_active
    return event


def insert_event_if_active(
    conn: sqlite3.Connection,
    session_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    metadata: dict[str, Any],
    source: str,
    cap: int = 0,
) -> Event | None:
    """``insert_event`` if the session is active (in the same statement); None if it is not.
    ``cap``: as ``_insert_event``'s."""
    return _insert_event(conn, session_id, event_type, data, metadata, source, None, None, if_active=True, cap=cap)


# Each statement that inserts events adds them to their session's count in the same
# transaction (a row trigger did, one UPDATE per event: store/migrations.py m130), and their
# bytes (data and metadata, as stored, in UTF-8: m132, m133). An event a client or user code publishes is
# checked against security.limits.max_event_bytes_per_session by that same UPDATE: no read of
# its own, and on PostgreSQL the row lock makes it hold across nodes.
def utf8_len(text: str) -> int:
    """The bytes of ``text`` in UTF-8, as stored (migration 133); ``len`` for ASCII, the usual
    case (``isascii`` is one flag's read, the encoding a copy)."""
    return len(text) if text.isascii() else len(text.encode())


_COUNT = "UPDATE session_counts SET events = events + ?, event_bytes = event_bytes + ? WHERE session_id = ?"
_COUNT_CAPPED = f"{_COUNT} AND event_bytes + ? <= ?"
_INSERT_COLUMNS = "events (event_id, session_id, event_type, data, metadata, source, timestamp, trace_id)"
_INSERT_ONE = f"INSERT INTO {_INSERT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_IF_ACTIVE = (
    f"INSERT INTO {_INSERT_COLUMNS} SELECT ?, ?, ?, ?, ?, ?, ?, ?"
    " FROM sessions WHERE session_id = ? AND status = 'active'"
)


def _insert_event(
    conn: sqlite3.Connection,
    session_id: str | None,
    event_type: str,
    data: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    source: str,
    trace_id: str | None,
    timestamp: str | None,
    *,
    if_active: bool = False,
    cap: int = 0,
) -> Event | None:
    """Append one event. (A session's last activity is its newest event's time, read with the
    session: appending does not also update the session row.) With ``if_active`` the event is
    written only if its session is active - one statement instead of a lookup and an insert -
    and None means it was not (``require_active`` then says why). ``cap``: the session's
    event bytes may not pass it (LIMIT_REACHED; the write fails, its insert rolled back)."""
    event_id = new_id()
    ts = timestamp or now_iso()
    # Store.write runs this in the caller's context, so the event joins the caller's trace.
    trace_id = trace_id or current_trace_id()
    data = data or {}
    metadata = metadata or {}
    row = (event_id, session_id, event_type, text := dumps(data), meta := dumps(metadata), source, ts, trace_id)
    if if_active:
        cur = conn.execute(_INSERT_IF_ACTIVE, (*row, session_id))
        if cur.rowcount != 1:
            return None
    else:
        cur = conn.execute(_INSERT_ONE, row)
    seq = cur.lastrowid
    assert seq is not None
    if session_id is not None:
        size = utf8_len(text) + utf8_len(meta)
        if cap <= 0:
            conn.execute(_COUNT, (1, size, session_id))
        elif conn.execute(_COUNT_CAPPED, (1, size, session_id, size, cap)).rowcount != 1:
            raise event_bytes_reached(cap)
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


INSERT_EVENTS = (
    "INSERT INTO events (event_id, session_id, event_type, data, metadata, source, timestamp, trace_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# (event_type, data, metadata, source): an event to append, as the bus's writers describe it
EventItem = tuple[str, dict[str, Any], dict[str, Any], str]


def insert_events(
    conn: sqlite3.Connection,
    session_id: str,
    items: list[EventItem],
    *,
    timestamp: str | list[str],
    trace_id: str | None,
) -> list[Event]:
    """Append several events of one session in one statement (``executemany``). ``items`` are
    (event_type, data, metadata, source); ``timestamp`` is theirs, or one per item."""
    if not items:
        return []
    if len(items) == 1:
        t, d, m, s = items[0]
        stamp = timestamp if isinstance(timestamp, str) else timestamp[0]
        return [insert_event(conn, session_id, t, d, metadata=m, source=s, timestamp=stamp, trace_id=trace_id)]
    rows = event_rows(session_id, items, timestamp=timestamp, trace_id=trace_id)
    conn.executemany(INSERT_EVENTS, rows)
    # One statement on the one writer connection: its rows got consecutive seqs.
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    conn.execute(_COUNT, (len(rows), rows_bytes(rows), session_id))
    return events_of(rows, items, last - len(rows) + 1)


def event_rows(
    session_id: str, items: list[EventItem], *, timestamp: str | list[str], trace_id: str | None
) -> list[tuple[Any, ...]]:
    """``items``' rows for ``INSERT_EVENTS`` (new ids, data and metadata encoded); ``trace_id``
    by default the caller's (a write runs in its caller's context)."""
    stamps = [timestamp] * len(items) if isinstance(timestamp, str) else timestamp
    trace_id = trace_id or current_trace_id()
    return [
        (new_id(), session_id, t, dumps(d), dumps(m), s, ts, trace_id)
        for (t, d, m, s), ts in zip(items, stamps, strict=True)
    ]


def rows_bytes(rows: list[tuple[Any, ...]]) -> int:
    """What ``event_rows``' rows add to their session's event bytes (data and metadata)."""
    return sum(utf8_len(r[3]) + utf8_len(r[4]) for r in rows)


def events_of(rows: list[tuple[Any, ...]], items: list[EventItem], first: int) -> list[Event]:
    """The events ``event_rows`` made ``rows`` of, once inserted with seqs from ``first`` on."""
    return [
        Event(
            event_id=row[0],
            seq=first + i,
            session_id=row[1],
            event_type=t,
            data=d,
            metadata=m,
            timestamp=row[6],
            source=s,
            trace_id=row[7],
        )
        for i, (row, (t, d, m, s)) in enumerate(zip(rows, items, strict=True))
    ]


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


# Sources a client may claim when publishing; "bus" is reserved for what the daemon emits.
PUBLISHER_SOURCES = ("api", "engine", "handler")


def check_event_type(event_type: str, field: str = "event_type") -> None:
    if not TYPE_RE.match(event_type):
        raise invalid(field, TYPE_RULE)


def check_type_pattern(pattern: str, field: str = "event_type") -> None:
    """An event type to list by (api/events.py): exact, or a prefix ending in ``*``
    (``Command*``; ``*`` is every type). Free text of 1 to 128 characters, not the type grammar
    of the API's own publish: user code may publish any such type (bus/usercode_bridge.py),
    and what can be published can be listed, as streams follow it (bus/stream_filter.py)."""
    if EVENT_LIST_TYPE_RE.fullmatch(pattern) is None:
        raise invalid(field, EVENT_LIST_TYPE_RULE, value=pattern[:64])


@dataclass(slots=True)
class EventFilter:
    event_type: str | None = None  # exact, or a prefix when it ends in "*"
    after: int | None = None
    since: str | None = None  # ISO timestamps, normalised (they compare as text)
    until: str | None = None
    source: str | None = None

    def where(self, session_id: str) -> tuple[str, list[Any]]:
        clauses: list[str] = ["session_id = ?"]
        params: list[Any] = [session_id]
        if self.event_type:
            if self.event_type.endswith("*"):
                prefix = self.event_type[:-1]
                if prefix:
                    clauses.append("substr(event_type, 1, ?) = ?")
                    params.extend([len(prefix), prefix])
            else:
                clauses.append("event_type = ?")
                params.append(self.event_type)
        if self.after is not None:
            clauses.append("seq > ?")
            params.append(self.after)
        if self.since:
            clauses.append("timestamp >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("timestamp < ?")
            params.append(self.until)
        if self.source:
            clauses.append("source = ?")
            params.append(self.source)
        return " AND ".join(clauses), params


# Event types one session may give series of events_published_total (``EventLog._type_label``).
TYPES_PER_SESSION = 50


class EventLog:
    """Live fan-out of committed events. Listeners must not block: they get the event and
    queue it (streams keep bounded queues and catch up from the store)."""

    def __init__(self, store: Store | None = None) -> None:
        self._listeners: list[Listener] = []
        self._read_back: list[Listener] = []
        self.store = store
        # security.limits.max_event_bytes_per_session for the events clients and user code
        # publish (0: none); the Bus sets it from its Capacity.
        self.max_bytes = 0
        # Event types that have their own series of events_published_total, and how many each
        # session brought (``_type_label``).
        self._typed: set[str] = set()
        self._types_of: dict[str | None, int] = {}
        self._batch_listeners: list[BatchListener] = []
        # events_published_total's child of each type label, bound once per registry.
        self._registry: metrics.Registry | None = None
        self._published: dict[str, metrics.BoundCounter] = {}

    def subscribe_read_back(self, listener: Listener) -> Callable[[], None]:
        """``listener(event)`` for the events the stream hub read back from the store
        (bus/streams.py ``StreamHub._fill``): those another node sharing the database committed
        (bus/cluster.py), in seq order, and now and then one of ours notified already. For
        wake-ups that may repeat (a wait across nodes: bus/commands/waiting.py, remote.py)."""
        self._read_back.append(listener)
        return lambda: self._read_back.remove(listener) if listener in self._read_back else None

    def read_back(self, event: Event) -> None:
        for listener in self._read_back:
            listener(event)

    def subscribe_batch(self, listener: BatchListener) -> None:
        """``listener(events)`` once per ``notify``: a listener with work to do once per commit
        rather than per event (the queue view's clock and trim) takes them this way."""
        self._batch_listeners.append(listener)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _type_label(self, event: Event) -> str:
        """The ``type`` label of an event whose type has no series yet. A metric keeps at most
        MAX_SERIES label sets, folding the rest into ``_other`` for the daemon's lifetime: one
        session publishing hundreds of made-up types took every series, and everyone's later
        types folded. A session brings at most TYPES_PER_SESSION types; its others fold alone."""
        if event.source == "bus":  # the daemon's own (SessionStarted, CommandResult...): a few
            self._typed.add(event.event_type)
            return event.event_type
        brought = self._types_of.get(event.session_id, 0)
        if brought >= TYPES_PER_SESSION or len(self._typed) >= metrics.MAX_SERIES:
            return metrics.OTHER
        self._types_of[event.session_id] = brought + 1
        self._typed.add(event.event_type)
        return event.event_type

    def notify(self, events: list[Event]) -> None:
        if not events:
            return
        if len(events) > 1:
            events = sorted(events, key=lambda e: e.seq)
        counts: dict[str, int] = {}
        typed = self._typed
        for event in events:
            label = event.event_type if event.event_type in typed else self._type_label(event)
            counts[label] = counts.get(label, 0) + 1
        registry = metrics.current()
        if registry is not self._registry:  # (tests run several apps, each installs its own)
            self._registry, self._published = registry, {}
        for event_type, n in counts.items():
            counter = self._published.get(event_type)
            if counter is None:
                counter = self._published[event_type] = registry.counter("events_published_total", type=event_type)
            counter.inc(n)
        for batch_listener in self._batch_listeners:
            batch_listener(events)
        listeners = list(self._listeners)
        for event in events:
            for listener in listeners:
                listener(event)

    # -- the Events API ---------------------------------------------------------------

    async def publish(
        self,
        session_id: str,
        event_type: str,
        data: dict[str, Any],
        metadata: dict[str, Any],
        *,
        source: str = "api",
        idem: IdempotencyKey | None = None,
    ) -> tuple[Event, bool]:
        """Append an event to an active session's log; returns (event, replayed)."""
        assert self.store is not None
        check_event_type(event_type)

        def write(conn: sqlite3.Connection) -> tuple[Event, bool]:
            prior = lookup(conn, idem)
            if prior is not None:
                return _get(conn, session_id, prior[1]), True
            event = insert_event_if_active(
                conn, session_id, event_type, data, metadata=metadata, source=source, cap=self.max_bytes
            )
            if event is None:
                # Imported here, on the refusal path only: sessions imports this module.
                from llmgine_daemon.bus.sessions import require_active

                require_active(conn, session_id)  # not found, or closed: raises which
                raise RuntimeError(f"session {session_id!r} is active yet took no event")
            record(conn, idem, "event", event.event_id, session_id)
            return event, False

        event, replayed = await self.store.write(write)
        if not replayed:
            self.notify([event])
        return event, replayed

    async def list(self, session_id: str, flt: EventFilter, limit: int, offset: int) -> EventList | LongPage:
        """A page of the session's events; a ``LongPage`` when its events pass PAGE_BYTES
        (bus/pages.py: the rest is read as it is sent)."""
        assert self.store is not None
        from llmgine_daemon.bus.sessions import fetch_session

        where, params = flt.where(session_id)
        select = f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE {where}"

        def read(conn: sqlite3.Connection) -> tuple[int, list[Any], bool]:
            fetch_session(conn, session_id)
            total = conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", params).fetchone()[0]
            return (total, *read_rows(conn, select, params, key="seq", offset=offset, count=limit))

        # On the loop while the page and its count are short; a long session's count (a scan)
        # runs past the store's budget and the read goes to the reader's thread.
        total, rows, cut = await self.store.read_point(read)
        events = [row_to_event(r[1:]) for r in rows]

        def envelope(last: Event | None, items: list[Event] | None = None) -> EventList:
            return EventList(items or [], total, limit, offset, last.seq if last is not None else flt.after)

        if not cut:
            return envelope(events[-1] if events else None, events)

        async def more(seq: int, count: int) -> tuple[list[Event], int]:
            assert self.store is not None
            part, _ = await self.store.read_point(
                lambda conn: read_rows(conn, select, params, key="seq", after=seq, count=count)
            )
            return [row_to_event(r[1:]) for r in part], part[-1][0] if part else seq

        return LongPage("events", events, rows[-1][0], limit, more, envelope)

    async def get(self, session_id: str, event_id: str) -> Event:
        assert self.store is not None
        return await self.store.read_point(lambda conn: _get(conn, session_id, event_id))


def _get(conn: sqlite3.Connection, session_id: str, event_id: str) -> Event:
    row = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ? AND session_id = ?",
        (event_id, session_id),
    ).fetchone()
    if row is None:
        from llmgine_daemon.bus.sessions import fetch_session

        fetch_session(conn, session_id)
        raise not_found("event", event_id=event_id, session_id=session_id)
    return row_to_event(row)
