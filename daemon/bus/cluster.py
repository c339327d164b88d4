"""Several daemons on one database: what the bus asks of "the cluster", and the one-node answer.

The bus calls these methods at the points where several nodes sharing one database would
otherwise step on each other; it never asks which database it runs on. ``LocalCluster`` is the
embedded case (SQLite, one process): this daemon is the whole bus, so every answer is the
trivial one and costs a Python call. ``bus/cluster_shared.py`` is the PostgreSQL one (session
leases, LISTEN/NOTIFY, node heartbeats); app.py picks which.

The contract, method by method:

- ``owns(session_id)``: may this node start commands of the session now? (Locally: always. In
  a cluster: while it holds the session's lease.) A command submitted for a session this node
  does not own is stored queued and ``forward``-ed to whoever owns it.
- ``may_claim(session_id)``: may an idle session's command be stored already executing in the
  transaction that queues it (``Runner.try_claim``, eager commands)? Locally always; in a
  cluster while this node holds the lease.
- ``fence(conn, session_id, claim=False)``: inside a write that starts or finishes a command:
  raise ``LeaseLost`` (rolling that write back) if this node no longer holds the session's
  lease; with ``claim``, ``ClaimRefused`` also when the store holds queued or executing
  commands of the session (queued on another node, not loaded here yet): the submission is
  then made again, queued.
- ``serialize(conn, name)``: inside a write that checks a capacity limit: make concurrent
  checks of ``name`` on every node run one after another (bus/capacity.py).
- ``recover(commands)``: at start, bring the command queue back (locally: what was executing is
  interrupted, queued commands resume; in a cluster: only sessions whose lease expired).
- ``announce(conn, session_id)`` (inside the write that queues a command), ``forward(session_id)``
  (after it committed), ``request_cancel(session_id, command_id)``: tell the node that runs the
  session about new work or a cancel; ``rerun(conn, command_id)`` (inside the write that runs a
  finished command again): its last run's cancel requests no longer apply.
- ``watch_events(wake)``: call ``wake()`` when another node committed events (the stream hub
  then reads them from the store); ``log_head(conn)``: the last committed seq.
- ``now()``: the cluster's time (the database's clock on PostgreSQL), for what every node must
  agree on: when a schedule's firing is due.
- ``on_fatal(reason)`` (set by app.py): called when this node must stop, such as a newer
  node's migration of the shared schema (bus/cluster_shared.py looks at every tick).
- ``registry_changed(conn, scope)`` (inside a write that adds, changes or removes engines or
  user-code handlers of ``scope``: a session id, None for the global scope) and
  ``watch_registry(sync)``: ``await sync(scopes)`` when another node changed those scopes
  (``None``: re-read everything); each node keeps them in memory for dispatch (bus/core.py
  ``Bus.sync_registry``). Locally: nothing to tell, nobody to hear.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmgine_daemon.protocol import ClusterInfo, ClusterNode

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands
    from llmgine_daemon.bus.core import Bus


# ``await sync(scopes)``: re-read the engines and handlers of these scopes (session ids, None for
# the global scope) from the store; ``sync(None)``: all of them.
RegistrySync = Callable[[set[str | None] | None], Awaitable[None]]


class LeaseLost(Exception):
    """This node no longer holds the lease of the session it was about to write for."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"the lease of session {session_id} is held by another node")
        self.session_id = session_id


class ClaimRefused(LeaseLost):
    """An idle session's command may not start in the write that queues it: the lease is gone,
    or another node queued work for the session that this node has not loaded yet."""


def new_node_id() -> str:
    """This process's node id: the host's short name and a random part (new at every start)."""
    host = socket.gethostname().split(".")[0][:24] or "node"
    return f"{host}-{uuid.uuid4().hex[:8]}"


class LocalCluster:
    """One process owns the whole bus (the SQLite backend)."""

    backend = "sqlite"
    # Whether other processes change the same database (keys and tokens included): a cluster.
    shared = False

    def __init__(self, node_id: str | None = None, lease_timeout: float = 15.0) -> None:
        self.node_id = node_id or new_node_id()
        self.lease_timeout = lease_timeout
        self.started_at = ""
        # ``on_fatal(reason)``: this node must stop (app.py stops the daemon, exit 1): another
        # node migrated the shared database to a schema this code does not know.
        self.on_fatal: Callable[[str], None] | None = None
        # Seconds to add to this host's clock to read the cluster's (the database's): 0 alone.
        self.clock_offset = 0.0

    def now(self) -> dt.datetime:
        """The time the whole cluster agrees on (schedules fire by it): this host's clock,
        corrected by ``clock_offset`` on a shared database."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_offset)

    async def start(self, bus: Bus) -> None:
        self.started_at = bus.started_at

    async def stop(self) -> None:
        return None

    def owns(self, session_id: str) -> bool:
        return True

    def may_claim(self, session_id: str) -> bool:
        return True

    def fence(self, conn: sqlite3.Connection, session_id: str, *, claim: bool = False) -> None:
        return None

    def serialize(self, conn: sqlite3.Connection, name: str) -> None:
        # One writer runs every write one after another already (bus/capacity.py).
        return None

    async def recover(self, commands: Commands) -> None:
        await commands.recover_all()

    def announce(self, conn: sqlite3.Connection, session_id: str) -> None:
        return None

    def forward(self, session_id: str) -> None:  # pragma: no cover - every session is owned here
        return None

    def log_head(self, conn: sqlite3.Connection) -> int | None:
        """The last committed seq, if the cluster keeps it (None: the store's own answer)."""
        return None

    def watch_events(self, wake: Callable[[], None]) -> Callable[[], None]:
        """``wake()`` when another node committed events (never: there is none)."""
        return lambda: None

    def registry_changed(self, conn: sqlite3.Connection, scope: str | None) -> None:
        return None

    def watch_registry(self, sync: RegistrySync) -> None:
        """``await sync(scopes)`` when another node changed engines or handlers (never)."""
        return None

    async def request_cancel(self, session_id: str, command_id: str | None, reason: str = "cancel") -> bool:
        """Ask the node running ``command_id`` (None: every executing command of the session) to
        cancel it (``reason``: cancel, session, engine); False if no other node could be running it."""
        return False

    def rerun(self, conn: sqlite3.Connection, command_id: str) -> None:
        """Inside the write that queues a finished command again (``command retry``): the cancel
        requests made for its last run are void (they would cancel this one)."""
        return None

    def held(self) -> int:
        return 0

    async def info(self) -> ClusterInfo:
        node = ClusterNode(
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            heartbeat_at=None,
            leases=0,
        )
        return ClusterInfo(backend=self.backend, node_id=self.node_id, lease_timeout=self.lease_timeout, nodes=[node])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "node_id": self.node_id}
