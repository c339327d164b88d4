"""Live event streams: a subscriber registry with bounded queues and gap-free resume.

The promise: a subscriber that starts after seq N receives every later event that matches its
filter exactly once, in seq order, whatever the publishers do and however slow it is itself.

How it is kept:

- ``StreamHub`` listens to ``EventLog.notify`` and re-orders what it hears into strict seq
  order before handing events to subscribers (``head`` = the last seq dispatched). Publishers
  call ``notify`` after their transaction committed, but two publishers of one group-commit
  batch may resume (and notify) in either order, and a publisher could forget to notify. So a
  notification that skips a seq makes the hub read ``seq > head`` from the store, which holds
  every committed event; a slow poll catches events nobody announced.
- A ``Subscription`` is registered with the hub BEFORE it reads its replay from the store,
  so nothing committed during the replay can fall between the two (the seam): every event is
  either in the store snapshot, or dispatched into the subscriber's buffer after it registered,
  or both, and the overlap is dropped by seq.
- Each subscriber's buffer is bounded. The hub only ever appends to it (never awaits), so a
  stalled subscriber cannot slow the publishers or the others. When a buffer is full it is
  dropped and the subscriber goes back to reading from the store from its own cursor until it
  has caught up, then switches to live again, with the same seam rule.

This module never imports aiohttp: the API (api/streams.py) turns items into WebSocket
messages or Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
from llmgine_daemon.bus.errors import StorageError, invalid, not_found
from llmgine_daemon.bus.events import EVENT_COLUMNS, row_to_event
from llmgine_daemon.bus.stream_filter import SESSION_ENDED, StreamFilter
from llmgine_daemon.bus.stream_reads import read_page
from llmgine_daemon.bus.stream_start import log_end, start_info
from llmgine_daemon.observability.repeats import RoundFailures
from llmgine_daemon.protocol import Event
from llmgine_daemon.protocol.streams import End, Frame, Lagging, Live, Subscribed

if TYPE_CHECKING:
    import datetime as _dt

    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.streams")
_sizer = msgspec.json.Encoder()  # for Subscription sizes (StreamHub.size_of)

# Events read from the store per replay round trip.
REPLAY_PAGE = 500
# Live events a subscriber may have waiting before it is switched back to replay. The queue
# holds references to events shared by every subscriber, so this bounds memory per subscriber.
DEFAULT_QUEUE_SIZE = 2048
# And their bytes (data and metadata as JSON): past LIVE_BYTES it is switched to replay too; a
# replay round reads at most REPLAY_BYTES (one event at least). The sender holds what it is
# handed until the client reads it: 500 events of 900 KB held ~1 GB per stalled stream.
LIVE_BYTES = 8 * 1024 * 1024
REPLAY_BYTES = 2 * 1024 * 1024
# With many subscribers, consumers are woken at most once per this interval (seconds) with
# everything that arrived meanwhile; an idle hub, or one with few subscribers, wakes them at
# once. A hundred subscribers woken per event cost a task switch and a write each, a thousand
# times a second: batching them keeps fan-out within one core for a few milliseconds of
# latency, a price a lone `event tail` need not pay.
FLUSH_INTERVAL = 0.008
FLUSH_MIN_SUBSCRIBERS = 16
# How often the hub checks the store for events that were committed but never announced.
POLL_INTERVAL = 1.0
# Encoded events kept for re-use across subscribers (encode once, send N times).
ENCODED_CACHE_SIZE = 8192
ENCODED_CACHE_BYTES = 32 * 1024 * 1024  # events can be large: bound the bytes too

# Answers to a client's own messages (pong, subscribed, error) waiting to be sent: past this many
# (a client that sends and never reads: 350 MB in 20 s) ``send_notice`` refuses, and the
# connection is dropped (api/streams.py).
MAX_NOTICES = 256

CLOSE_NORMAL = 1000  # the session ended: nothing more will come
CLOSE_GOING_AWAY = 1001  # the daemon is shutting down: reconnect and resume


# -- what a subscriber receives ----------------------------------------------------------


# Events, and the protocol's stream frames (protocol/streams.py); an ``End`` is the last.
Item: TypeAlias = Event | Frame


class Subscription:
    """One subscriber: a cursor, a bounded buffer of live events, a mode (replay or live).

    The consumer (one task) calls ``get()`` in a loop; the hub calls ``_offer()``.
    """

    def __init__(self, hub: StreamHub, flt: StreamFilter, cursor: int, queue_size: int) -> None:
        self.hub = hub
        self.filter = flt
        # The seq of the last event handed to the consumer (or the start point).
        self.cursor = cursor
        self.start = cursor
        self.queue_size = queue_size
        self.replaying = False
        self.ending = False
        self.ended_event: Event | None = None
        self._end: End | None = None
        self._buffer: deque[Event] = deque()
        self._buffered_bytes = 0
        # Bumped whenever the buffer is dropped: a replay that overlapped a drop cannot hand
        # over to live (events dispatched before the drop may be missing from its snapshot).
        self._epoch = 0
        # Control frames, and filter changes (a StreamFilter: switch here), in arrival order.
        self._notices: list[Frame | StreamFilter] = []
        # The filter the latest change asked for (what the next change amends).
        self.wanted = flt
        self._wake = asyncio.Event()
        self.closed = False
        # Figures for tests and the benchmark.
        self.delivered = 0
        self.overflows = 0
        self.max_buffered = 0

    # -- hub side (synchronous, never blocks) ---------------------------------------

    def _offer(self, event: Event) -> None:
        if not self.filter.matches(event):
            return
        size = self.hub.size_of(event)
        if len(self._buffer) >= self.queue_size or (self._buffer and self._buffered_bytes + size > LIVE_BYTES):
            self._drop_buffer()
            self._epoch += 1
            self.overflows += 1
            self.hub.overflows += 1
            if not self.replaying:
                self.replaying = True
                self._notices.append(Lagging(after_seq=self.cursor, head_seq=self.hub.head))
            self._wake.set()
        else:
            self._buffer.append(event)
            self._buffered_bytes += size
            if len(self._buffer) > self.max_buffered:
                self.max_buffered = len(self._buffer)
            self.hub._mark_ready(self)

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._buffered_bytes = 0

    def _finish(self, end: End) -> None:
        self._end = end
        self._wake.set()

    def _end_after_drain(self, ended_event: Event | None) -> None:
        self.ending = True
        if ended_event is not None:
            self.ended_event = ended_event
        self._wake.set()

    # -- consumer side ---------------------------------------------------------------

    def send_notice(self, notice: Frame) -> bool:
        """Queue a control message, delivered in order with the events (one writer); False,
        queuing nothing, when ``MAX_NOTICES`` are waiting already (the client does not read)."""
        if len(self._notices) >= MAX_NOTICES:
            return False
        self._notices.append(notice)
        self._wake.set()
        return True

    def stop(self, end: End) -> None:
        """End the stream now (the consumer went away); ``get()`` returns ``end``."""
        if self._end is None:
            self._finish(end)

    def change_filter(self, flt: StreamFilter) -> bool:
        """Applied by the consumer in order with the control frames queued before it, from
        the cursor it has then on; each change is acknowledged (``Subscribed``). Build ``flt``
        from ``wanted``: a change still queued is what the next one amends. Bounded with the
        control frames (False: ``MAX_NOTICES`` are waiting, as ``send_notice``)."""
        if len(self._notices) >= MAX_NOTICES:
            return False
        self.wanted = flt
        self._notices.append(flt)
        self._wake.set()
        return True

    async def get(self) -> list[Item]:
        """The next items, in order; an ``End`` is the last item ever returned."""
        while True:
            if self._end is not None:
                return [self._end]
            if self._notices:  # one at a time, in order (they are rare)
                notice = self._notices.pop(0)
                if not isinstance(notice, StreamFilter):
                    return [notice]
                self.filter = notice
                self._go_replay()
                return [Subscribed(**notice.describe(), after_seq=self.cursor)]
            if self.replaying:
                items = await self._replay_round()
                if items:
                    return items
                continue
            if self._buffer:
                batch = [e for e in self._buffer if e.seq > self.cursor]
                self._drop_buffer()
                if batch:
                    return self._deliver(batch)
                continue
            if self.ending:
                tail: list[Item] = []
                ended = self.ended_event
                if ended is not None and ended.seq > self.cursor:
                    tail.extend(self._deliver([ended]))
                self._end = End(code=CLOSE_NORMAL, reason="session ended")
                return [*tail, self._end]
            self._wake.clear()
            await self._wake.wait()

    def _go_replay(self) -> None:
        self._drop_buffer()
        self._epoch += 1
        self.replaying = True

    async def _replay_round(self) -> list[Item]:
        epoch = self._epoch
        events, more = await self.hub.read_after(self.cursor, self.filter, REPLAY_PAGE)
        if self._end is not None or any(isinstance(n, StreamFilter) for n in self._notices):
            # Shut down, or the filter changed while reading: the next get() decides.
            return self._deliver(events) if events and self._end is None else []
        items: list[Item] = list(self._deliver(events)) if events else []
        if not more and epoch == self._epoch:
            # Caught up with a snapshot taken after we registered, and no live event was
            # dropped since the read began: the buffer holds everything after the snapshot.
            self.replaying = False
            tail = [e for e in self._buffer if e.seq > self.cursor]
            self._drop_buffer()
            if tail:
                items.extend(self._deliver(tail))
            if not self.ending:
                # Tells the client its replay (or catch-up) is over: what follows is live.
                items.append(Live(seq=self.cursor))
        return items

    def _deliver(self, events: list[Event]) -> list[Item]:
        self.cursor = events[-1].seq
        self.delivered += len(events)
        return list(events)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._unregister(self)


# -- the hub -------------------------------------------------------------------------------


class StreamHub:
    """Every live subscriber, fed in strict seq order from ``EventLog`` notifications."""

    def __init__(self, bus: Bus, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.bus = bus
        self.queue_size = queue_size
        self.head = 0  # the last seq dispatched to subscribers
        self._notified_max = 0
        self._pending: dict[int, Event] = {}
        self._started = False
        self._filling = False
        self._fill_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self._unwatch: Any = None
        # Set when a wake-up came while a fill ran: that fill reads once more before it ends.
        self._again = False
        self._by_session: dict[str, set[Subscription]] = {}
        self._global: set[Subscription] = set()
        self._ended: OrderedDict[str, Event] = OrderedDict()
        self._encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._encoded_bytes = 0
        self._sized: Event | None = None  # the event size_of measured last, and its size
        self._size = 0
        self.flush_interval = FLUSH_INTERVAL
        self._ready: set[Subscription] = set()
        self._count = 0  # subscriptions registered
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        # Figures for tests and the benchmark.
        self.dispatched = 0
        self.fills = 0
        self.overflows = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # Listen first, then read where the log ends: an event committed in between is both
        # heard and possibly below the head read; the head check drops it once.
        self._unsubscribe = self.bus.events.subscribe(self._on_event)
        # Events other nodes sharing the database committed (bus/cluster.py): read from the store.
        self._unwatch = self.bus.cluster.watch_events(self.wake)
        self.bus.sessions.hooks.append(self._on_session_end)
        self.head = await self.bus.store.read(self._last_seq)
        self._notified_max = max(self._notified_max, self.head)
        self._started = True
        self._drain_pending()
        if self._pending:
            self._schedule_fill()
        self._poll_task = asyncio.create_task(self._poll(), name="llmgine-streams-poll")

    async def stop(self) -> None:
        """End every stream with 1001 (going away) and stop listening."""
        self.close_all(CLOSE_GOING_AWAY, "daemon shutting down")
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._on_session_end in self.bus.sessions.hooks:
            self.bus.sessions.hooks.remove(self._on_session_end)
        for task in (self._poll_task, self._fill_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        self._started = False

    def close_all(self, code: int, reason: str) -> None:
        for sub in self.subscriptions():
            sub._finish(End(code=code, reason=reason))

    async def wait_idle(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until every subscription has been closed by its consumer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.subscriptions() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def subscriptions(self) -> list[Subscription]:
        subs = list(self._global)
        for group in self._by_session.values():
            subs.extend(group)
        return subs

    # -- subscribing -----------------------------------------------------------------

    async def subscribe(
        self,
        flt: StreamFilter,
        since: int | _dt.datetime | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Register a subscriber, then work out where it starts.

        ``since``: a seq (replay everything after it), a time (replay from the first event at
        or after it), or None (live from now). A session stream of a session that has ended
        replays up to its SessionEnded and ends; unknown sessions raise SESSION_NOT_FOUND.
        """
        # Register before anything is read (the seam rule), live from the current head.
        sub = Subscription(self, flt, self.head, queue_size or self.queue_size)
        self._register(sub)
        try:
            await self._position(sub, since)
        except BaseException:
            sub.close()
            raise
        return sub

    async def _position(self, sub: Subscription, since: int | _dt.datetime | None) -> None:
        session_id = sub.filter.session_id
        info = await self.bus.store.read(lambda c: start_info(c, session_id, since, self._last_seq(c)))
        if session_id is not None and info["status"] is None:
            raise not_found("session", session_id=session_id)
        if isinstance(since, int):
            if since > info["last_seq"]:
                raise invalid("since", f"is beyond the last seq of this log ({info['last_seq']})", value=since)
            sub.cursor = since
        elif since is not None:
            sub.cursor = info["time_seq"]
        elif info["ended"] is not None:
            # Nothing will ever come live: show how it ended.
            sub.cursor = min(sub.cursor, info["ended"].seq - 1)
        sub.start = sub.cursor
        if since is not None or info["ended"] is not None:
            sub._go_replay()
        if info["status"] == "closed":
            sub._end_after_drain(info["ended"])

    def _register(self, sub: Subscription) -> None:
        self._count += 1
        if sub.filter.session_id is None:
            self._global.add(sub)
        else:
            self._by_session.setdefault(sub.filter.session_id, set()).add(sub)

    def _unregister(self, sub: Subscription) -> None:
        self._count -= 1
        self._global.discard(sub)
        session_id = sub.filter.session_id
        if session_id is not None:
            group = self._by_session.get(session_id)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._by_session[session_id]

    async def read_after(self, cursor: int, flt: StreamFilter, limit: int) -> tuple[list[Event], bool]:
        """Up to ``limit`` events after ``cursor`` that ``flt`` wants, at most about
        ``REPLAY_BYTES`` of them (one at least); and whether more may follow (a bound cut it)."""
        where, params = flt.sql()
        rows, more = await self.bus.store.read(lambda c: read_page(c, cursor, where, params, limit, REPLAY_BYTES))
        return [row_to_event(r) for r in rows], more

    def size_of(self, event: Event) -> int:
        """About the bytes ``event`` holds (data and metadata as JSON), once for all subscribers."""
        if self._sized is not event:
            self._sized, self._size = event, len(_sizer.encode(event.data)) + len(_sizer.encode(event.metadata))
        return self._size

    def encoded(self, event: Event, form: str, encode: Callable[[Event], bytes]) -> bytes:
        """``encode(event)``, computed once per (form, seq) however many subscribers send it
        (a WebSocket frame, an SSE frame): fan-out costs a copy, not an encode, per subscriber."""
        key = (form, event.seq)
        data = self._encoded.get(key)
        if data is None:
            data = encode(event)
            self._encoded[key] = data
            self._encoded_bytes += len(data)
            while self._encoded and (
                len(self._encoded) > ENCODED_CACHE_SIZE or self._encoded_bytes > ENCODED_CACHE_BYTES
            ):
                self._encoded_bytes -= len(self._encoded.popitem(last=False)[1])
        return data

    # -- dispatch in seq order ---------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.seq > self._notified_max:
            self._notified_max = event.seq
        if event.seq <= self.head:
            return
        if not self._started or self._filling:
            self._pending[event.seq] = event
            return
        if event.seq == self.head + 1:
            self._dispatch(event)
            if self._pending:
                self._drain_pending()
        else:
            self._pending[event.seq] = event
            self._schedule_fill()

    def _dispatch(self, event: Event) -> None:
        self.head = event.seq
        self.dispatched += 1
        if event.event_type == SESSION_ENDED and event.session_id is not None:
            self._ended[event.session_id] = event
            if len(self._ended) > 1024:
                self._ended.popitem(last=False)
        for sub in self._global:
            sub._offer(event)
        if event.session_id is not None:
            group = self._by_session.get(event.session_id)
            if group:
                for sub in group:
                    sub._offer(event)

    def _mark_ready(self, sub: Subscription) -> None:
        self._ready.add(sub)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            delay = self._last_flush + self.flush_interval - loop.time()
            if self._count < FLUSH_MIN_SUBSCRIBERS:
                delay = 0.0
            if delay <= 0:
                # After the current notification: its whole batch goes out in one wake.
                self._flush_handle = loop.call_soon(self._flush)
            else:
                self._flush_handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        ready, self._ready = self._ready, set()
        for sub in ready:
            sub._wake.set()

    def _drain_pending(self) -> None:
        for seq in [s for s in self._pending if s <= self.head]:
            del self._pending[seq]
        while self.head + 1 in self._pending:
            self._dispatch(self._pending.pop(self.head + 1))

    def wake(self) -> None:
        """Events were committed that nobody notified here (another node's): read them."""
        if self._filling:
            self._again = True
        else:
            self._schedule_fill()

    def _schedule_fill(self) -> None:
        if not self._filling and self._started:
            self._filling = True
            self._fill_task = asyncio.create_task(self._fill(), name="llmgine-streams-fill")

    async def _fill(self) -> None:
        """Close a gap in the notifications from the store, which has every committed event."""
        self.fills += 1
        try:
            while True:
                # Every event notified so far was committed before this read starts.
                mark = self._notified_max
                rows = await self.bus.store.read(
                    lambda c: c.execute(
                        f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                        (self.head, REPLAY_PAGE),
                    ).fetchall()
                )
                for row in rows:
                    if row[1] > self.head:
                        event = row_to_event(row)
                        self._dispatch(event)
                        self.bus.events.read_back(event)  # another node's: wakes waits here
                if len(rows) == REPLAY_PAGE:
                    continue
                # Seqs are assigned in commit order, so everything up to ``mark`` was in the
                # snapshot; a notified event missing from it was deleted (purged) since.
                self.head = max(self.head, mark)
                self._drain_pending()
                if self._again:
                    self._again = False
                    continue
                if not self._pending:
                    return
        except asyncio.CancelledError:
            raise
        except StorageError as exc:  # busy or unreachable: one line
            log.warning("streams: reading the event log failed; retrying: %s", exc)
            await asyncio.sleep(POLL_INTERVAL)
        except Exception:
            log.exception("streams: reading the event log failed; retrying")
            await asyncio.sleep(POLL_INTERVAL)
            self._filling = False
            self._schedule_fill()
            return
        finally:
            if self._fill_task is asyncio.current_task():
                self._filling = False

    async def _poll(self) -> None:
        failures = RoundFailures(log, "streams", "streams: cannot read the event log head")
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                last = await self.bus.store.read(self._last_seq)
            except Exception as exc:  # the database down or restarting: a line a minute at most
                failures.failed(exc, trace=not isinstance(exc, StorageError))
                continue
            failures.worked()
            if last > self.head and not self._filling:
                # Committed events nobody announced (or announced late): read them.
                self._notified_max = max(self._notified_max, last)
                self._schedule_fill()

    def _last_seq(self, conn: sqlite3.Connection) -> int:
        """The last committed seq. Several nodes (bus/cluster.py) keep it in a row of their own:
        a database sequence's value would run ahead of what is committed, and a head read ahead
        of the log would make the hub skip the events in between."""
        head = self.bus.cluster.log_head(conn)
        return log_end(conn) if head is None else head

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait until everything notified so far has been dispatched."""
        target = self._notified_max
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.head < target and loop.time() < deadline:
            if not self._filling and self._started:
                self._schedule_fill()
            await asyncio.sleep(0.005)

    async def _on_session_end(self, session_id: str, purged: bool) -> None:
        group = self._by_session.get(session_id)
        if not group:
            self._ended.pop(session_id, None)
            return
        # SessionEnded was notified before this hook ran; make sure it has been dispatched
        # so the subscribers deliver it (or hold it, if purged) before closing.
        await self.settle()
        ended = self._ended.pop(session_id, None)
        for sub in list(self._by_session.get(session_id, ())):
            sub._end_after_drain(ended)
