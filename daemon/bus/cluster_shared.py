"""Several daemons on one PostgreSQL database: session leases, cross-node wake-ups, failover.

The contract is ``bus/cluster.py``'s; the statements are in ``store/pg_cluster.py``. What this
node does:

- **Leases.** It runs a session's commands only while it holds the session's lease. A command
  submitted for a session it does not hold is stored queued, with ``NOTIFY llmgine_work`` to the
  holder (which loads the session's queued commands from the store into its queue); if nobody
  holds it, the submitting node takes it. Every write that starts or finishes a command checks
  the lease and its epoch in the same transaction (``fence``), so a node that lost its lease
  cannot record anything. A lease is renewed every ``tick`` while held; an idle session's lease
  is given back (unless work was queued for it meanwhile).
- **Failover.** Each tick (at most a second apart) also takes over sessions whose lease expired
  (``cluster.lease_timeout``: the node died or stalled), or that have queued, executing or
  waiting commands and no lease: what was executing there becomes ``interrupted`` (the rule of
  a restart), what was queued runs here, what waited for an approval waits here. A node that
  was cut off from the database (a tick failed) takes no expired lease over for a lease
  timeout after it is back: in an outage of the database every lease expires, and the other
  nodes, alive, renew theirs meanwhile.
- **Restart.** A daemon restarted in the same home does not wait for the timeout: the home
  keeps the id of the node that last ran there (``state/cluster-node``), and at start that
  node's leases expire at once and this node takes all its sessions over before it listens,
  as SQLite's restart does. Only when that node is known dead: one daemon per home (its socket is exclusive), and
  the node's last report names this host and a process that no longer runs (or this one, as
  in a container whose daemon is always pid 1).
- **Events.** One ``LISTEN`` connection: a notification of another node's commit wakes the
  stream hub, which reads ``seq > head`` from the store (bus/streams.py); the hub's own poll
  covers a lost notification. Cancel requests (``llmgine_cancel``) reach the node running the
  command the same way, and a tick re-reads pending ones.
- **Registries.** A write that changes engines or user-code handlers logs the scope it changed
  (``registry_changes``, a dense version from one locked row) and notifies
  ``llmgine_registry``; each node then reads the changes after the version it has seen and
  re-reads those scopes from the store (``Bus.sync_registry``). The tick compares the head
  version too, so a lost notification costs at most a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.approvals import requeue
from llmgine_daemon.bus.cluster import ClaimRefused, LeaseLost, LocalCluster, RegistrySync
from llmgine_daemon.bus.errors import StorageError
from llmgine_daemon.observability.repeats import RoundFailures
from llmgine_daemon.paths import write_private
from llmgine_daemon.protocol import ClusterInfo, ClusterNode, to_iso
from llmgine_daemon.store import pg_cluster as sql
from llmgine_daemon.store.pg_schema import newer_schema

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands
    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.cluster")


def _dead(process: tuple[str, int] | None, host: str) -> bool:
    """Is the node that last reported ``process`` (host, pid) gone? Unknown (forgotten or left
    cleanly): yes. Another host: not ours to judge. This host: its pid no longer runs, or is ours."""
    if process is None:
        return True
    its_host, its_pid = process
    if its_host != host:
        return False
    if its_pid == os.getpid():
        return True
    try:
        os.kill(its_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# Sessions taken over per tick (each a few statements in one transaction).
TAKEOVER_BATCH = 20
# Sessions of this home's previous node taken back per transaction at start (all before it
# listens).
INHERIT_BATCH = 500
# How long after finding a session's lease held by another node a submission here stops trying
# to take it in its own write (and queues the command for that node at once).
CLAIM_BACKOFF_S = 2.0
LISTEN_RETRY_S = 1.0
# The reasons another node may give for a cancel (request_cancel): a client's, the session's
# end, the command's engine deleted; anything else is taken as a client's.
CANCEL_REASONS = ("cancel", "session", "engine")
# A take whose write is tried this many tick intervals after the last tick that committed (a
# write retried through an outage) takes no expired lease over (``_may_take_expired``).
BLIND_TICKS = 2
# The registry's old changes are pruned every this many ticks.
PRUNE_EVERY_TICKS = 60
# A host clock this far (seconds) from the database's is said in the log (``_set_clock``).
CLOCK_WARN_S = 2.0


class SharedCluster(LocalCluster):
    backend = "postgresql"
    shared = True

    def __init__(
        self, url: str, node_id: str | None = None, lease_timeout: float = 15.0, node_file: Path | None = None
    ) -> None:
        super().__init__(node_id, lease_timeout)
        self.url = url
        self.node_file = node_file  # where the home keeps the id of the node that last ran there
        self.tick_interval = max(0.05, min(1.0, lease_timeout / 3))
        self.leases: dict[str, int] = {}  # session -> epoch, the leases this node holds
        self.bus: Bus | None = None
        self.commands: Commands | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wanting: set[str] = set()
        self._refused: dict[str, float] = {}  # session -> when a claim found it held elsewhere
        self._own_pids: set[int] = set()
        self._event_watchers: list[Callable[[], None]] = []
        self._stopping = False
        # Registries: the last change applied here, who re-reads them, the task doing it.
        self._registry_seen = 0
        self._registry_sync: RegistrySync | None = None
        self._registry_task: asyncio.Task[None] | None = None
        self._registry_again = False
        self._ticks = 0
        self._inherited: list[str] = []  # the sessions of this home's previous node (start)
        self._clock_warned = 0.0  # the clock offset last said in the log (0: none said)
        # When the last tick's write committed, and until when this node takes no expired lease
        # over (it was cut off from the database: the others may have been too; ``_tick``).
        self._ticked_at = 0.0
        self._hold_until = 0.0
        self._cut_off = False  # a tick failed since the last one that committed
        # Figures for tests and the benchmark.
        self.takeovers = 0
        self.notifications = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, bus: Bus) -> None:
        await super().start(bus)
        self.bus = bus
        bus.store.first_statements = (sql.LOCK_FIRST,)  # one lock order on every node
        bus.store.last_statements = (sql.SAVE_HEAD,)
        host, pid = socket.gethostname(), os.getpid()
        predecessor = self._predecessor()

        def first(conn: Any) -> tuple[int, int]:
            if predecessor is not None and _dead(sql.node_process(conn, predecessor), host):
                self._inherited = sql.forget(conn, predecessor)
                if self._inherited:
                    n = len(self._inherited)
                    log.info("taking over %d session(s) of %s, which ran in this home before", n, predecessor)
            sql.heartbeat(conn, self.node_id, host, pid, self.started_at, self.lease_timeout)
            self._set_clock(sql.clock_offset(conn))
            # Read before the bus loads its engines and handlers: later changes are applied.
            return conn.execute("SELECT pg_backend_pid()").fetchone()[0], sql.registry_head(conn)

        # The writer's backend pid: notifications it sent are our own commits, already heard.
        own_pid, self._registry_seen = await bus.store.write(first)
        self._own_pids.add(own_pid)
        if self.node_file is not None:
            write_private(self.node_file, self.node_id + "\n")
        listening = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.create_task(self._listen(listening), name="llmgine-cluster-listen"))
        await asyncio.wait([listening], timeout=10.0)

    async def recover(self, commands: Commands) -> None:
        """Nothing to recover by ourselves: other nodes may be running. Sessions whose node
        died are taken over by the tick, once their lease expired."""
        self.commands = commands
        # The sessions of the node that ran in this home before, all of them before this node
        # listens (the tick's scan takes TAKEOVER_BATCH at a time: a client would read their
        # commands "executing" for seconds after the restart, as it never does on SQLite).
        inherited, self._inherited = self._inherited, []
        for i in range(0, len(inherited), INHERIT_BATCH):
            await self._take(inherited[i : i + INHERIT_BATCH], scan=False)
        await self._tick()
        self._tasks.append(asyncio.create_task(self._ticker(), name="llmgine-cluster-tick"))

    async def stop(self) -> None:
        """After the runner stopped (what ran is recorded interrupted): give every lease back,
        so queued work moves to the other nodes at their next tick, not after the timeout."""
        self._stopping = True
        tasks = self._tasks + ([self._registry_task] if self._registry_task is not None else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.bus is not None:
            try:
                await self.bus.store.write(lambda c: sql.leave(c, self.node_id))
            except Exception as exc:
                log.warning("could not give the leases back (they expire by themselves): %s", exc)
        self.leases.clear()

    def _predecessor(self) -> str | None:
        """The id of the node that ran in this home before, if it left one."""
        if self.node_file is None:
            return None
        try:
            text = self.node_file.read_text().strip()
        except OSError:
            return None
        return text if text and text != self.node_id else None

    # -- the bus's questions ------------------------------------------------------------

    def owns(self, session_id: str) -> bool:
        return session_id in self.leases

    def may_claim(self, session_id: str) -> bool:
        """Held here, or not seen held by another node lately (then ``fence`` takes it)."""
        if session_id in self.leases:
            return True
        refused = self._refused.get(session_id)
        return refused is None or time.monotonic() - refused > CLAIM_BACKOFF_S

    def fence(self, conn: Any, session_id: str, *, claim: bool = False) -> None:
        epoch = self.leases.get(session_id)
        if claim:
            # An idle session's command about to be stored executing: take a free lease in the
            # same transaction (this runs in the store's writer, so the lease is only noted once
            # every check passed; a transaction lost after that is noticed by the next fence).
            if epoch is None:
                got = sql.acquire(conn, session_id, self.node_id, self.lease_timeout)
                if got is None or got[1] == "expired":  # held elsewhere, or a dead node's: the tick takes those
                    self._refused[session_id] = time.monotonic()
                    raise ClaimRefused(session_id)
                epoch = got[0]
            if sql.busy(conn, session_id) or not sql.fence(conn, session_id, self.node_id, epoch):
                raise ClaimRefused(session_id)
            self._refused.pop(session_id, None)
            self.leases[session_id] = epoch
            return
        if epoch is None or not sql.fence(conn, session_id, self.node_id, epoch):
            raise LeaseLost(session_id)

    def serialize(self, conn: Any, name: str) -> None:
        sql.serialize(conn, name)

    def announce(self, conn: Any, session_id: str) -> None:
        """Inside the write that queues a command this node will not run: wake the holder."""
        if session_id not in self.leases:
            sql.notify(conn, sql.CHANNEL_WORK, session_id)

    def forward(self, session_id: str) -> None:
        """A command was queued for a session this node does not hold: take the lease if it is
        free (the holder, if any, heard ``announce``)."""
        self._want(session_id)

    async def request_cancel(self, session_id: str, command_id: str | None, reason: str = "cancel") -> bool:
        assert self.bus is not None
        return bool(await self.bus.store.write(lambda c: sql.request_cancel(c, session_id, command_id, reason)))

    def rerun(self, conn: Any, command_id: str) -> None:
        sql.void_cancels(conn, command_id)

    def watch_events(self, wake: Callable[[], None]) -> Callable[[], None]:
        self._event_watchers.append(wake)
        return lambda: self._event_watchers.remove(wake) if wake in self._event_watchers else None

    def log_head(self, conn: Any) -> int | None:
        return sql.log_head(conn)

    def registry_changed(self, conn: Any, scope: str | None) -> None:
        sql.registry_changed(conn, scope)

    def watch_registry(self, sync: RegistrySync) -> None:
        self._registry_sync = sync

    def _sync_registry(self) -> None:
        """Apply the registry changes committed since the last one applied here (one task at a
        time; a request while it runs makes it run once more)."""
        if self._registry_sync is None or self._stopping or self.bus is None:
            return
        if self._registry_task is not None and not self._registry_task.done():
            self._registry_again = True
            return
        self._registry_task = asyncio.create_task(self._registry_loop(), name="llmgine-cluster-registry")

    async def _registry_loop(self) -> None:
        assert self.bus is not None and self._registry_sync is not None
        again = True
        while again:
            self._registry_again = False
            seen = self._registry_seen
            try:
                changes = await self.bus.store.read(lambda c, seen=seen: sql.registry_changes(c, seen))
                if changes:
                    # A gap: the changes in it were pruned (a node long cut off): re-read all.
                    scopes = None if changes[0][0] != seen + 1 else {scope for _, scope in changes}
                    await self._registry_sync(scopes)
                    self._registry_seen = changes[-1][0]
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # the database down or restarting: a line, no traceback
                log.warning("cluster: applying registry changes failed (the next tick retries): %s", exc)
                return
            except Exception:
                log.exception("cluster: applying registry changes failed (the next tick retries)")
                return
            again = self._registry_again

    def held(self) -> int:
        return len(self.leases)

    async def info(self) -> ClusterInfo:
        assert self.bus is not None
        rows = await self.bus.store.read(lambda c: sql.live_nodes(c, self.lease_timeout))
        nodes = [
            ClusterNode(
                node_id=r[0],
                host=r[1],
                pid=int(r[2]),
                started_at=r[3],
                heartbeat_at=to_iso(datetime.fromtimestamp(float(r[4]), UTC)),
                leases=int(r[5]),
            )
            for r in rows
        ]
        return ClusterInfo(backend=self.backend, node_id=self.node_id, lease_timeout=self.lease_timeout, nodes=nodes)

    # -- taking sessions ----------------------------------------------------------------

    def _want(self, session_id: str) -> None:
        if session_id in self._wanting or self._stopping:
            return
        self._wanting.add(session_id)
        task = asyncio.create_task(self._take([session_id], scan=False))
        task.add_done_callback(lambda _: self._wanting.discard(session_id))

    async def _take(self, session_ids: list[str], *, scan: bool) -> None:
        """Acquire the sessions' leases (``scan``: look for orphaned sessions too) and run their
        queued commands here; executing commands of a session taken over are interrupted."""
        commands = self.commands
        if commands is None or self._stopping:
            return
        node, timeout = self.node_id, self.lease_timeout

        def write(conn: Any) -> list[tuple[str, int, Any]]:
            # Asked at each try: a write retried through an outage must not take, once the
            # database is back, the leases that expired only because of it.
            expired = self._may_take_expired()
            wanted = list(session_ids)
            if scan:
                wanted += [s for s in sql.orphans(conn, TAKEOVER_BATCH, expired=expired) if s not in self.leases]
            got = []
            for sid in dict.fromkeys(wanted):
                lease = sql.acquire(conn, sid, node, timeout, take_expired=expired)
                if lease is None:
                    continue
                epoch, how = lease
                # A session taken from another node, or found without a lease: whatever is
                # still executing there ran on a node that is gone. One whose lease was this
                # node's already (a second take racing the first, a forward and a tick) runs
                # only what this node started: nothing to interrupt. Commands waiting there for
                # an approval's decision, or decided but not yet gone on, are queued again to
                # go on here (bus/approvals.py), as a restart does.
                interrupted = []
                if how != "held":
                    running = self._running_ids(sid)
                    requeue(conn, sid, running)
                    interrupted = commands.interrupt_executing(conn, sid, exclude=running)
                got.append((sid, epoch, (interrupted, commands.queued_rows(conn, sid))))
            return got

        try:
            taken = await commands.runner.durable_write(write)
        except Exception:
            log.exception("cluster: taking sessions %s failed", session_ids or "(scan)")
            return
        for sid, epoch, (interrupted, queued) in taken:
            if sid not in self.leases and (interrupted or scan):
                self.takeovers += 1
            self.leases[sid] = epoch
            if interrupted:
                log.info("session %s: %d command(s) of a lost node marked interrupted", sid, len(interrupted))
                assert self.bus is not None
                self.bus.events.notify(interrupted)
            commands.resume(*queued, await commands.retries.load_due() if queued[0] else {})

    def _may_take_expired(self) -> bool:
        """May this node take over leases that expired? Not while it has not reached the database
        for more than ``BLIND_TICKS`` ticks, nor for a lease timeout after a tick failed or came
        more than a lease timeout after the last (``_tick``)."""
        now = time.monotonic()
        if now < self._hold_until:
            return False
        return not self._ticked_at or now - self._ticked_at <= BLIND_TICKS * self.tick_interval

    def _running_ids(self, session_id: str) -> set[str]:
        assert self.commands is not None
        return {
            cid
            for cid, job in self.commands.runner.jobs.items()
            if job.record.session_id == session_id and job.state != "queued"
        }

    async def _refresh(self, session_id: str) -> None:
        """Work was queued elsewhere for a session we hold: load what we do not know yet."""
        commands = self.commands
        if commands is None or session_id not in self.leases:
            return
        try:
            queued = await commands.store.read(lambda c: commands.queued_rows(c, session_id))
        except Exception:
            log.exception("cluster: reading the queue of session %s failed", session_id)
            return
        commands.resume(*queued, await commands.retries.load_due() if queued[0] else {})

    # -- the tick: heartbeat, renewals, releases, takeovers, cancels ----------------------

    async def _ticker(self) -> None:
        failures = RoundFailures(log, "cluster", "cluster: tick failed", expected=(StorageError,))
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                await self._tick()
                failures.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database down or restarting: a line a minute at most
                self._cut_off = True
                failures.failed(exc)

    async def _tick(self) -> None:
        commands = self.commands
        assert self.bus is not None and commands is not None
        # First and on its own: a newer schema may break the statements below (a node would
        # then fail every tick and never find out why).
        newer = await self.bus.store.read(newer_schema)
        if newer is not None:
            self._schema_too_new(newer)
            return
        runner = commands.runner
        idle = [s for s in list(self.leases) if not runner.has_work(s)]
        node, timeout = self.node_id, self.lease_timeout
        host, pid = socket.gethostname(), os.getpid()
        held = dict(list(self.leases.items()))
        self._ticks += 1
        prune = self._ticks % PRUNE_EVERY_TICKS == 1

        def write(conn: Any) -> tuple[dict[str, int], list[str], list[tuple[str, str]], int]:
            sql.heartbeat(conn, node, host, pid, self.started_at, timeout)
            renewed = sql.renew(conn, node, timeout)
            released = [s for s in idle if s in renewed and sql.release(conn, s, node, renewed[s])]
            if prune:
                sql.prune_registry_changes(conn)
            cancels, registry = sql.pending_cancels(conn, node), sql.registry_head(conn)
            self._set_clock(sql.clock_offset(conn))
            return renewed, released, cancels, registry

        renewed, released, cancels, registry = await self.bus.store.write(write)
        now = time.monotonic()
        gap = now - self._ticked_at if self._ticked_at else 0.0
        if self._cut_off or gap > self.lease_timeout:
            # Cut off from the database (down, restarting, unreachable): the others' leases may
            # have expired only because they were cut off too. Give them a lease timeout to
            # renew before taking any over (a node that did die is taken over that much later).
            # Ticks that are only slow (a loaded database) hold nothing: failover goes on.
            self._hold_until = now + self.lease_timeout
            log.info(
                "cluster: leases renewed again after %.1f s (the database unreachable, or this node stalled);"
                " taking no expired lease over for %.0f s",
                gap,
                self.lease_timeout,
            )
        self._ticked_at, self._cut_off = now, False
        if registry > self._registry_seen:  # a change whose notification did not come (yet)
            self._sync_registry()
        now = time.monotonic()
        for sid, when in list(self._refused.items()):
            if now - when > CLAIM_BACKOFF_S:
                self._refused.pop(sid, None)
        for sid in released:
            self.leases.pop(sid, None)
            if runner.has_work(sid):  # work came in meanwhile: take the session again
                self._want(sid)
        for sid, epoch in held.items():
            if renewed.get(sid) != epoch and self.leases.get(sid) == epoch:
                # Taken over by another node (we stalled past the timeout): what still runs
                # here can no longer be recorded; stop it.
                log.warning("cluster: lost the lease of session %s", sid)
                self.leases.pop(sid, None)
                runner.lose_session(sid)
        for sid in idle:
            if sid in self.leases and sid not in released:
                await self._refresh(sid)  # not released: work was queued for it
        for cid, reason in cancels:
            self._cancel_local(cid, reason)
        await self._take([], scan=True)

    def _set_clock(self, offset: float) -> None:
        """The database's clock against this host's (the writer's thread, every tick): schedules
        follow the database's (``now``); a host whose own is off by more than CLOCK_WARN_S is
        said in the log, when first found and whenever it moved that much again, since the
        times this node writes (created_at, expiries, retention's cut-off) are still its own."""
        self.clock_offset = offset
        if abs(offset) >= CLOCK_WARN_S and abs(offset - self._clock_warned) >= CLOCK_WARN_S:
            self._clock_warned = offset
            log.warning(
                "cluster: this host's clock is %.1f s %s the database server's; schedules follow the"
                " database's, but the times this node records (created_at, expiries, retention) follow"
                " its own: synchronise it (NTP)",
                abs(offset),
                "ahead of" if offset < 0 else "behind",
            )
        elif abs(offset) < CLOCK_WARN_S and self._clock_warned:
            self._clock_warned = 0.0
            log.info("cluster: this host's clock agrees with the database server's again")

    def _schema_too_new(self, reason: str) -> None:
        """Another node migrated the database past this code (an upgrade with this node still
        running): its statements no longer match the schema (since migrations 130-131 the
        session counts are kept by them), so it stops, saying why, rather than go on writing."""
        if self._stopping or self.on_fatal is None:
            return
        self._stopping = True  # no more takeovers, nothing wanted; stop() gives the leases back
        message = f"another node migrated the database: {reason}"
        log.error("cluster: %s; stopping this node", message)
        self.on_fatal(message)

    def _cancel_local(self, command_id: str, reason: str) -> None:
        commands = self.commands
        if commands is None:
            return
        job = commands.runner.jobs.get(command_id)
        if job is not None and job.state in ("starting", "running"):
            commands.runner.cancel_running(job, reason if reason in CANCEL_REASONS else "cancel")

    # -- LISTEN -------------------------------------------------------------------------

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        import psycopg
        from llmgine_daemon.store.pg_connect import connect_args

        while not self._stopping:
            try:
                # The store's timeout and keepalives: on a dead network path it fails, and is
                # made again, instead of waiting for notifications for ever.
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **connect_args(self.url)
                ) as conn:
                    if conn.info.server_version >= 140000:
                        # Idle by design: a server's idle_session_timeout (managed services set
                        # one) ended it at every timeout, notifications missed meanwhile.
                        await conn.execute("SET idle_session_timeout = 0")
                    for channel in (sql.CHANNEL_EVENTS, sql.CHANNEL_WORK, sql.CHANNEL_CANCEL, sql.CHANNEL_REGISTRY):
                        await conn.execute(f"LISTEN {channel}")
                    if not listening.done():
                        listening.set_result(None)
                    self._wake_events()  # what was committed while we were not listening
                    self._sync_registry()
                    async for note in conn.notifies():
                        self.notifications += 1
                        self._on_notify(note.channel, note.payload, note.pid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # libpq's hints follow
                log.warning("cluster: LISTEN connection lost (%s); reconnecting", reason)
                if not listening.done():
                    listening.set_result(None)
                await asyncio.sleep(LISTEN_RETRY_S)

    def _on_notify(self, channel: str, payload: str, pid: int) -> None:
        if channel == sql.CHANNEL_EVENTS:
            if pid not in self._own_pids:
                self._wake_events()
        elif channel == sql.CHANNEL_WORK:
            if payload in self.leases:
                asyncio.create_task(self._refresh(payload))
        elif channel == sql.CHANNEL_REGISTRY:
            self._sync_registry()  # our own changes too: they are in the log like any other
        elif channel == sql.CHANNEL_CANCEL:
            reason, _, command_id = payload.partition(":")
            self._cancel_local(command_id, reason)

    def _wake_events(self) -> None:
        for wake in list(self._event_watchers):
            try:
                wake()
            except Exception:
                log.exception("cluster: an event watcher failed")
