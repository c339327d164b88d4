"""The webhook outbox and its sender: two background tasks (started and stopped with the bus).

**Deriving** (``_derive_loop``): the outbox rows come from the event log through a committed
cursor (``webhook_cursor``). A round reads, on the reader connection, the events after the
cursor (up to ROUND) and the webhooks, builds one row per (webhook, matching event), then ONE
write moves the cursor - ``UPDATE ... WHERE seq = <the value read>`` - and inserts the rows
(``ON CONFLICT (webhook_id, event_seq) DO NOTHING``). The cursor and the rows commit together:
after a kill -9 the next start carries on from the cursor, nothing lost, nothing derived twice.
Two daemons on one database (PostgreSQL later) race for the cursor; the loser's UPDATE matches
no row, its transaction is rolled back, and it reads again. The event log is read, never
written: the bus's writes do not wait for webhooks (a round is one small write in the group
commit, only while webhooks exist). Committed events wake it (``EventLog.subscribe``).

**Sending** (``_send_loop``): due rows (``status = 'pending' AND next_attempt_at <= now``) are
claimed with a conditional UPDATE that sets a lease (``lease_until``, ``lease_owner``), so two
senders never send one delivery at once; a lease left by a killed daemon expires and the row
is sent again (at least once: receivers de-duplicate by ``webhook-id``). Up to CLAIM attempts
are in flight at once, at most PER_HOOK of one webhook and a fair share of them for one
session's webhooks (``share``: half while one session sends, a third each while two do, ...,
always leaving room for one more session), taken in turn between sessions, and each is recorded
when it ends, not when its round does: a target that never answers holds only its own, and
sessions whose targets never answer leave slots for the others. Each attempt is
recorded in ``webhook_attempts`` (status code, error, duration); a failure is retried after
``retry_base * 2**(attempt-1)`` seconds (at most ``retry_cap``) until ``retry_for`` seconds
after the delivery was made, then the delivery is ``failed``. A 2xx answer is ``delivered``.
Ended deliveries are forgotten ``keep_for`` seconds later (``webhooks.keep_days``).

A cursor over seq is sound because events commit in seq order on both backends: SQLite has
one writer, and on PostgreSQL seq is taken from a row locked until COMMIT (store/pg_cluster.py),
so a reader that sees seq N sees every seq below it.

The HTTP request itself is the ``Sender`` that app.py hands down (api/webhook_sender.py): the
bus does not import aiohttp.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmgine_daemon import __version__
from llmgine_daemon.aio import cancel_and_wait, wait_event
from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.errors import StorageError
from llmgine_daemon.bus.events import EVENT_COLUMNS, row_to_event
from llmgine_daemon.bus.webhook_policy import sign
from llmgine_daemon.observability.repeats import RoundFailures
from llmgine_daemon.protocol import Event, now_iso, parse_iso, to_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.bus.webhooks import WebhookConfig

log = logging.getLogger("llmgine.webhooks")

# send(url, headers, body, timeout, session_token) -> (HTTP status or None, error or None);
# session_token: a session token's webhook, whose hosts are webhooks.session_token_allowed_hosts
Sender = Callable[[str, dict[str, str], bytes, float, bool], Awaitable[tuple[int | None, str | None]]]

ROUND = 256  # events read per deriving round
CLAIM = 16  # deliveries in flight at once (this daemon)
# ... of one webhook: a target that never answers holds at most these, and the others' due
# deliveries are claimed past its backlog (they waited behind it for its timeouts before).
PER_HOOK = 4
# ... of one session's webhooks (global ones: no such cap): PER_HOOK alone let one session
# with CLAIM / PER_HOOK webhooks to targets that never answer hold every slot, and no other
# session's delivery was sent until their timeouts. A fixed half of them (PER_SESSION) still
# let two such sessions hold every slot: the cap is a share of CLAIM among the sessions
# sending, with room left for one more (``share``).
PER_SESSION = CLAIM // 2


def share(sessions: int) -> int:
    """Attempts one session may have in flight while ``sessions`` sessions (itself included)
    have some: CLAIM split between them and one more, so that a session that becomes due
    finds a free slot as long as fewer than CLAIM sessions send (one each at least)."""
    return max(1, CLAIM // (max(1, sessions) + 1))


SCAN = 8 * CLAIM  # due rows looked at per claim
IDLE_S = 5.0  # how long an idle loop sleeps before it looks again (another daemon's rows)
LEASE_MARGIN_S = 5.0  # a lease is twice the attempt's timeout and this
PRUNE_EVERY_S = 600.0  # how often ended deliveries older than keep_for are forgotten
# A delivery whose event was deleted before it was sent fails with this (nothing is sent).
GONE = "the event is no longer stored (event retention, or its session was purged)"


def in_turn(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Due deliveries (oldest first; ``row[2]``: the session, None for a global webhook) in
    turn between sessions: each one's oldest, then each one's second, ...; a session with a
    long backlog does not take the slots of a round before the others' first."""
    rank: Counter[Any] = Counter()
    order = []
    for i, row in enumerate(rows):
        order.append((rank[row[2]], i))
        rank[row[2]] += 1
    return [rows[i] for _, i in sorted(order)]


class _Lost(Exception):
    """Another deriver moved the cursor first: roll this round back and read again."""


def _later(seconds: float) -> str:
    return to_iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))


def matches(filters: list[str], event_type: str) -> bool:
    for f in filters:
        if f == "*" or f == event_type or (f.endswith("*") and event_type.startswith(f[:-1])):
            return True
    return False


def payload(event: Event) -> str:
    """The body of a delivery (Standard Webhooks: type, timestamp, data)."""
    import msgspec

    return dumps({"type": event.event_type, "timestamp": event.timestamp, "data": msgspec.to_builtins(event)})


class Outbox:
    def __init__(self, bus: Bus, config: WebhookConfig) -> None:
        self.bus = bus
        self.store = bus.store
        self.config = config
        self.owner = new_id()  # this daemon's leases
        self._count = 0  # webhooks known to exist: none, and events do not wake the deriver
        self._derive_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The attempts in flight, each with its webhook's id and session (send_due).
        self._sending: dict[asyncio.Task[None], tuple[str, str | None]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def changed(self, delta: int) -> None:
        self._count = max(0, self._count + delta)
        self._derive_wake.set()

    def _on_event(self, _event: Event) -> None:
        if self._count:
            self._derive_wake.set()

    async def start(self, sender: Sender | None) -> None:
        self._count = (await self.store.fetchone("SELECT COUNT(*) FROM webhooks") or (0,))[0]
        self._unsubscribe = self.bus.events.subscribe(self._on_event)
        self._tasks.append(asyncio.create_task(self._derive_loop(), name="webhook-outbox"))
        if sender is not None:
            self._tasks.append(asyncio.create_task(self._send_loop(sender), name="webhook-sender"))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        # The attempts in flight (one cut short is sent again once its lease ends): whatever
        # one raised was logged (_sent) and must not keep the bus's other parts from stopping.
        attempts = list(self._sending)
        for task in attempts:
            task.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
        self._sending.clear()

    @staticmethod
    async def _nap(wake: asyncio.Event, seconds: float) -> None:
        await wait_event(wake, seconds)
        wake.clear()

    # -- deriving -----------------------------------------------------------------------

    async def _derive_loop(self) -> None:
        failures = RoundFailures(log, "webhook_outbox", "webhook outbox round failed", expected=(StorageError,))
        while True:
            try:
                more = await self.derive_once()
                failures.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - busy, full or unreachable: try again shortly
                failures.failed(exc)
                more = False
            if more:
                await asyncio.sleep(0)
                continue
            await self._nap(self._derive_wake, IDLE_S)
            if self._count:
                await asyncio.sleep(0.02)  # let a burst of events gather into one round

    async def derive_once(self) -> bool:
        """One round; True when there may be more to derive at once."""

        def read(conn: sqlite3.Connection) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            cursor = conn.execute("SELECT seq FROM webhook_cursor WHERE name = 'events'").fetchone()[0]
            hooks = conn.execute("SELECT webhook_id, events, session_id, after_seq FROM webhooks").fetchall()
            if not hooks:
                return cursor, [], []
            start = max(cursor, min(h[3] for h in hooks))
            # What picks the webhooks only: an event's data (up to a request body each) is read
            # when a delivery of it is sent (``_body``), not ROUND of them at once here.
            rows = conn.execute(
                "SELECT seq, session_id, event_type FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (start, ROUND)
            ).fetchall()
            return cursor, hooks, rows

        cursor, hooks, events = await self.store.read(read)
        self._count = len(hooks)
        if not events:
            return False
        ts = now_iso()
        rows = []
        for seq, event_session, event_type in events:
            for webhook_id, filters, session_id, after_seq in hooks:
                if seq <= after_seq or (session_id is not None and event_session != session_id):
                    continue
                if not matches(loads(filters), event_type):
                    continue
                # No copy of the event (``payload`` empty): a session's up to
                # webhooks.max_per_session webhooks each stored one, 20 times the session's
                # storage budget (security.limits.max_event_bytes_per_session), uncounted.
                rows.append((new_id(), webhook_id, seq, event_type, event_session, "", ts, ts))
        top = events[-1][0]

        def write(conn: sqlite3.Connection) -> None:
            moved = conn.execute(
                "UPDATE webhook_cursor SET seq = ? WHERE name = 'events' AND seq = ?", (top, cursor)
            ).rowcount
            if moved != 1:
                raise _Lost()
            alive: dict[str, bool] = {}  # a webhook deleted since the read gets no rows
            for row in rows:
                if row[1] not in alive:
                    found = conn.execute("SELECT 1 FROM webhooks WHERE webhook_id = ?", (row[1],)).fetchone()
                    alive[row[1]] = found is not None
                if alive[row[1]]:
                    conn.execute(
                        "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event_seq, event_type, session_id,"
                        " payload, status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                        " ON CONFLICT (webhook_id, event_seq) DO NOTHING",
                        row,
                    )

        try:
            await self.store.write(write)
        except _Lost:
            return True
        if rows:
            self._send_wake.set()
        return len(events) == ROUND

    # -- sending ------------------------------------------------------------------------

    async def _send_loop(self, sender: Sender) -> None:
        pruned = 0.0
        failures = RoundFailures(log, "webhook_sender", "webhook sender round failed", expected=(StorageError,))
        while True:
            try:
                if time.monotonic() - pruned >= min(PRUNE_EVERY_S, self.config.keep_for):
                    pruned = time.monotonic()
                    await self.prune()
                wait = await self.send_due(sender)
                failures.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - busy, full or unreachable: try again shortly
                failures.failed(exc)
                wait = 1.0
            if wait > 0:
                await self._nap(self._send_wake, min(wait, IDLE_S))

    async def prune(self) -> int:
        """Forget deliveries that ended (delivered or failed) more than ``keep_for`` seconds
        ago, with their attempts; returns how many."""
        cutoff = _later(-self.config.keep_for)

        def write(conn: sqlite3.Connection) -> int:
            ended = "status != 'pending' AND finished_at < ?"
            conn.execute(
                f"DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT delivery_id FROM webhook_deliveries"
                f" WHERE {ended})",
                (cutoff,),
            )
            return conn.execute(f"DELETE FROM webhook_deliveries WHERE {ended}", (cutoff,)).rowcount

        return await self.store.write(write)

    async def send_due(self, sender: Sender) -> float:
        """Claim what is due and start sending it (at most CLAIM in flight, PER_HOOK of one
        webhook, a ``share`` of them for one session's webhooks, the sessions' due deliveries
        taken in turn); how long until something may be due again (an attempt that ends wakes
        the loop sooner)."""
        free = CLAIM - len(self._sending)
        if free <= 0:
            return IDLE_S
        busy = Counter(hook for hook, _ in self._sending.values())
        by_session = Counter(session for _, session in self._sending.values() if session is not None)
        full = sorted(hook for hook, n in busy.items() if n >= PER_HOOK)
        full_sessions = sorted(session for session, n in by_session.items() if n >= share(len(by_session)))
        skip = f" AND d.webhook_id NOT IN ({', '.join('?' * len(full))})" if full else ""
        if full_sessions:
            skip += f" AND (w.session_id IS NULL OR w.session_id NOT IN ({', '.join('?' * len(full_sessions))}))"
        now = now_iso()
        nxt = await self.store.fetchone(
            "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id"
            f" WHERE d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until < ?){skip}",
            (now, *full, *full_sessions),
        )
        if nxt is None or nxt[0] is None:
            return IDLE_S
        if nxt[0] > now:
            return (parse_iso(nxt[0]) - parse_iso(now)).total_seconds()
        lease = _later(2 * self.config.timeout + LEASE_MARGIN_S)
        owner = self.owner

        def claim(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(
                "SELECT d.delivery_id, d.webhook_id, w.session_id, w.url, w.secret, d.event_seq, d.attempts,"
                " d.created_at, w.session_token"
                " FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
                f" AND (d.lease_until IS NULL OR d.lease_until < ?){skip}"
                " ORDER BY d.next_attempt_at LIMIT ?",
                (now, now, *full, *full_sessions, SCAN),
            ).fetchall()
            won: list[tuple[Any, ...]] = []
            held = Counter(busy)
            held_by_session = Counter(by_session)
            for row in in_turn(rows):
                if len(won) == free:
                    break
                if held[row[1]] >= PER_HOOK:
                    continue
                if row[2] is not None and held_by_session[row[2]] >= share(
                    len(held_by_session) + (row[2] not in held_by_session)
                ):
                    continue
                taken = conn.execute(
                    "UPDATE webhook_deliveries SET lease_until = ?, lease_owner = ? WHERE delivery_id = ?"
                    " AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?)",
                    (lease, owner, row[0], now),
                ).rowcount
                if taken == 1:
                    won.append(row)
                    held[row[1]] += 1
                    if row[2] is not None:
                        held_by_session[row[2]] += 1
            return won

        claimed = await self.store.write(claim)
        if not claimed:
            return 0.05
        for delivery_id, webhook_id, session_id, *rest in claimed:
            task = asyncio.create_task(self._attempt(sender, delivery_id, *rest), name="webhook-attempt")
            self._sending[task] = (webhook_id, session_id)
            task.add_done_callback(self._sent)
        return 0.0

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._send_wake.set()
        error = None if task.cancelled() else task.exception()
        if isinstance(error, StorageError):
            # Busy, full or unreachable: the attempt's outcome (or its event) was not read or
            # written; its lease runs out and it is sent again. One line, as the other rounds.
            log.warning("webhook attempt not recorded, sent again later: %s", error)
        elif error is not None:
            log.error("webhook attempt failed", exc_info=error)

    async def _body(self, delivery_id: str, seq: int) -> str | None:
        """The delivery's body, made from its event as stored now (None once the event is gone:
        event retention, or its session purged); a row an older version wrote carries it."""

        def read(conn: sqlite3.Connection) -> str | None:
            kept = conn.execute(
                "SELECT payload FROM webhook_deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            if kept is not None and kept[0]:
                return str(kept[0])
            row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
            return None if row is None else payload(row_to_event(row))

        return await self.store.read(read)

    async def _attempt(
        self,
        sender: Sender,
        delivery_id: str,
        url: str,
        secret: str,
        seq: int,
        attempts: int,
        created_at: str,
        session_token: int,
    ) -> None:
        started, t0 = now_iso(), time.monotonic()
        body = await self._body(delivery_id, seq)
        if body is None:
            await self._record(delivery_id, attempts + 1, created_at, started, None, GONE, 0.0, final=True)
            return
        data = body.encode()
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"llmgine-webhooks/{__version__}",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, delivery_id, stamp, data),
        }
        try:
            status, error = await sender(url, headers, data, self.config.timeout, bool(session_token))
        except Exception as exc:  # noqa: BLE001 - a sender bug must not kill the loop
            status, error = None, f"{type(exc).__name__}: {exc}"
        duration = round((time.monotonic() - t0) * 1000, 3)
        await self._record(delivery_id, attempts + 1, created_at, started, status, error, duration)

    async def _record(
        self,
        delivery_id: str,
        attempt: int,
        created_at: str,
        started: str,
        status: int | None,
        error: str | None,
        duration_ms: float,
        *,
        final: bool = False,
    ) -> None:
        cfg = self.config
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"HTTP {status}"
        now = now_iso()
        delay = min(cfg.retry_cap, cfg.retry_base * 2 ** (attempt - 1))
        give_up = final or (parse_iso(now) - parse_iso(created_at)).total_seconds() + delay > cfg.retry_for
        state = "delivered" if ok else ("failed" if give_up else "pending")
        finished = now if state != "pending" else None
        next_at = _later(delay) if state == "pending" else now

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM webhook_deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone():
                conn.execute(  # (a webhook deleted meanwhile took its deliveries with it)
                    "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, error, duration_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id, attempt) DO NOTHING",
                    (delivery_id, attempt, started, status, error, duration_ms),
                )
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?,"
                " last_error = ?, finished_at = ?, lease_until = NULL, lease_owner = NULL"
                " WHERE delivery_id = ? AND lease_owner = ?",
                (state, attempt, next_at, status, error, finished, delivery_id, self.owner),
            )

        await self.store.write(write)
        if state == "pending":
            self._send_wake.set()
