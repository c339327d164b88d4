"""The stream hub's reads of the store for events it was not told of (bus/streams.py).

``StreamHub`` dispatches what ``EventLog.notify`` announces, in seq order. What it was not
announced it reads from the store, which has every committed event: a gap in the
announcements (two publishers of one group commit announce in either order), events committed
by another node sharing the database (``wake``, from bus/cluster.py), and, every
``POLL_INTERVAL``, whatever nobody announced at all.

A ``SessionEnded`` read here may be another node's: that node ends its own subscribers' streams
(its session hook, ``StreamHub._on_session_end``), but no hook runs on this one, so the
streams of that session here end after it too (they stayed open for ever).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.errors import StorageError
from llmgine_daemon.bus.events import EVENT_COLUMNS, row_to_event
from llmgine_daemon.bus.stream_filter import SESSION_ENDED
from llmgine_daemon.bus.stream_start import log_end
from llmgine_daemon.observability.repeats import RoundFailures

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.protocol import Event

log = logging.getLogger("llmgine.streams")

# Events read from the store per replay round trip.
REPLAY_PAGE = 500
# How often the hub checks the store for events that were committed but never announced.
POLL_INTERVAL = 1.0


class StoreFollower:
    """StreamHub's part that reads the store; the hub holds the state it uses."""

    bus: Bus
    head: int
    fills: int
    _notified_max: int
    _pending: dict[int, Event]
    _started: bool
    _filling: bool
    _again: bool
    _fill_task: asyncio.Task[None] | None
    _by_session: dict[str, Any]

    def _dispatch(self, event: Event) -> None:
        raise NotImplementedError

    def _drain_pending(self) -> None:
        raise NotImplementedError

    def _ended_elsewhere(self, event: Event) -> None:
        """``event`` (a SessionEnded read from the store, several nodes sharing it) may be
        another node's: the streams of its session here end once they delivered it. (This
        node's own end runs its session hook as well, which ends them the same way. A single
        node leaves it to that hook, which runs after the other hooks' events, a cancelled
        command's result among them.)"""
        for sub in list(self._by_session.get(event.session_id or "", ())):
            sub._end_after_drain(event)

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
                        if event.event_type == SESSION_ENDED and self.bus.cluster.shared:
                            self._ended_elsewhere(event)
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
        failures = RoundFailures(log, "streams", "streams: cannot read the event log head", expected=(StorageError,))
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                last = await self.bus.store.read(self._last_seq)
            except Exception as exc:  # the database down or restarting: a line a minute at most
                failures.failed(exc)
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
