"""The Bus: the domain core the API calls. It never imports aiohttp.

It owns the store and the runtime parts (event fan-out, handler registry, command runner,
engines; later the sandbox pool), each in its own module named after its resource.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from llmgine_daemon.bus.approvals import ApprovalPolicy, Approvals
from llmgine_daemon.bus.capacity import Capacity
from llmgine_daemon.bus.cluster import LocalCluster
from llmgine_daemon.bus.commands import Commands
from llmgine_daemon.bus.engine_registry import EngineBase, Engines
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.events import EventLog
from llmgine_daemon.bus.fork import Forks
from llmgine_daemon.bus.handler_registry import HandlerRegistry
from llmgine_daemon.bus.mcp_servers import McpPolicy, McpServers
from llmgine_daemon.bus.schedules import Schedules
from llmgine_daemon.bus.sessions import Sessions
from llmgine_daemon.bus.tools import Tools
from llmgine_daemon.bus.usage import Prices, UsageBook
from llmgine_daemon.bus.usercode_bridge import SandboxBridge
from llmgine_daemon.bus.usercode_handlers import UserHandlers
from llmgine_daemon.bus.webhook_outbox import Sender
from llmgine_daemon.bus.webhooks import WebhookConfig, Webhooks
from llmgine_daemon.protocol import CallErrorCode, StatusCounts, now_iso
from llmgine_daemon.sandbox.pool import SandboxPool
from llmgine_daemon.store.db import Store


class Bus:
    def __init__(
        self,
        store: Store,
        engine_types: dict[str, type[EngineBase]] | None = None,
        sandbox: SandboxPool | None = None,
        capacity: Capacity | None = None,
        engine_context: Callable[[Bus], Any] | None = None,
        webhooks: WebhookConfig | None = None,
        webhook_sender: Sender | None = None,
        schedule_limits: tuple[int, int] = (50, 1000),
        prices: dict[str, list[float]] | None = None,
        approval_policy: ApprovalPolicy | None = None,
        mcp: McpPolicy | None = None,
        secrets: Callable[[str], str | None] | None = None,
        cluster: LocalCluster | None = None,
    ) -> None:
        """``engine_context`` builds, from this Bus, what every engine's constructor gets
        beside its record (engines/context.py); it is called once the Bus's other parts exist.
        ``webhook_sender`` makes the HTTP requests of webhook deliveries (api/webhook_sender.py;
        without one, deliveries are derived and kept but not sent). ``mcp``: the rules for MCP
        servers (settings mcp.*); ``secrets``: looks up a secret of ``llmgine secret`` by name
        (MCP servers' ``secret:NAME`` environment values)."""
        self.store = store
        # The other daemons sharing the database, if any (bus/cluster.py; SQLite: none).
        self.cluster = cluster or LocalCluster()
        # security.limits.max_*: checked inside the creating writes (bus/capacity.py).
        self.capacity = capacity or Capacity()
        self.started_at = now_iso()
        self._started_monotonic = time.monotonic()
        self.events = EventLog(store)
        self.events.max_bytes = self.capacity.max_event_bytes_per_session
        # Token usage and cost per command (usage.prices over the built-in table).
        self.usage = UsageBook(store, Prices(prices))
        # Approval before a tool runs (tools.require_approval, tools.approval_timeout).
        self.approvals = Approvals(self, approval_policy)
        self.sessions = Sessions(self)
        self.handlers = HandlerRegistry()
        self.commands = Commands(self)
        self.sessions.hooks.append(self.commands.on_session_end)
        # User code (tools, handlers) runs in the sandbox pool; the app starts and stops it.
        self.sandbox = sandbox
        self.sandbox_bridge = SandboxBridge(self, sandbox) if sandbox is not None else None
        self.tools = Tools(self)
        self.mcp = McpServers(self, mcp, secrets)
        self.sessions.hooks.append(self.mcp.on_session_end)
        self.user_handlers = UserHandlers(self)
        # Last: the engines' context may use any other part (the tools, the store, events).
        context = engine_context(self) if engine_context is not None else None
        self.engines = Engines(self, engine_types or {}, context)
        self.forks = Forks(self)
        self.sessions.hooks.append(self.engines.on_session_end)
        self.webhooks = Webhooks(self, webhooks)
        self._webhook_sender = webhook_sender
        self.schedules = Schedules(self, *schedule_limits)
        self.sessions.hooks.append(self.webhooks.on_session_end)
        self.sessions.ending += [self.mcp.end_with_session, self.webhooks.end_with_session, Schedules.end_with_session]
        # Engines and handlers changed by another node sharing the database (bus/cluster.py).
        self.cluster.watch_registry(self.sync_registry)

    def warm_sandbox(self) -> None:
        """User code will run here (a tool or handler is stored or registered): start the
        sandbox's workers in the background, so its first call does not wait for them."""
        if self.sandbox is not None:
            self.sandbox.warm()

    def sandbox_pool(self) -> SandboxPool:
        if self.sandbox is None:
            raise BusError(CallErrorCode.SANDBOX_UNAVAILABLE, "user code is disabled: no sandbox")
        return self.sandbox

    @property
    def max_timeout(self) -> float:
        """sandbox.max_timeout: the longest deadline a tool or handler may ask for."""
        return self.sandbox.limits.max_timeout if self.sandbox is not None else 3600.0

    @property
    def uptime(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)

    @property
    def storage_unreachable(self) -> str | None:
        """Why the database could not be reached at the last try (PostgreSQL down), or None."""
        return self.store.unreachable

    @property
    def storage_damaged(self) -> str | None:
        """Why the database file is damaged, once a read or write found it so, or None."""
        return self.store.damaged

    @property
    def storage_full(self) -> str | None:
        """Why the last write transaction could not store a write (a full disk), or None."""
        return self.store.full

    async def start(self) -> None:
        """Bring runtime state back after a restart: engines, user-code handlers (and
        their command handlers) and MCP servers first, then the command queue (executing -> interrupted,
        queued -> resumed), so that resumed commands find their handlers. The sandbox's
        workers start now only if stored tools or handlers will need them (sandbox/pool.py)."""
        await self.cluster.start(self)
        await self.engines.start()
        await self.user_handlers.start()
        await self.tools.start()
        await self.mcp.start()
        await self.approvals.start()  # commands that waited for a decision: queued again
        await self.commands.start()
        # Then what submits work or reads the log on its own: schedules and webhooks.
        self.schedules.start()
        await self.webhooks.start(self._webhook_sender)

    async def restore_handlers(self, session_id: str) -> bool:
        """A command found no handler: load the session's engines and user-code handlers that
        another node sharing the database registered (bus/cluster.py). True if any was new."""
        engines = await self.engines.restore(session_id)
        handlers = await self.user_handlers.restore(session_id)
        return engines or handlers

    async def sync_registry(self, scopes: set[str | None] | None) -> None:
        """Another node changed the engines, user-code handlers or MCP servers of these scopes
        (session ids, None for the global scope; ``scopes`` None: any): run here what the store
        now holds."""
        await self.engines.reconcile(None if scopes is None else {s for s in scopes if s is not None})
        await self.user_handlers.reconcile(scopes)
        await self.mcp.reconcile(scopes)

    async def stop(self) -> None:
        """Stop runtime work; queued work stays queued in the store for the next start."""
        await self.schedules.stop()
        await self.webhooks.stop()
        await self.commands.stop()
        await self.user_handlers.stop()
        await self.engines.stop()
        await self.mcp.stop()
        await self.cluster.stop()

    async def counts(self) -> StatusCounts:
        def read(conn: sqlite3.Connection) -> StatusCounts:
            def one(sql: str) -> int:
                return conn.execute(sql).fetchone()[0]

            return StatusCounts(
                sessions=one("SELECT COUNT(*) FROM sessions"),
                active_sessions=one("SELECT COUNT(*) FROM sessions WHERE status = 'active'"),
                commands=one("SELECT COUNT(*) FROM commands"),
                # seq is dense except after a purge; COUNT(*) stays exact.
                events=one("SELECT COUNT(*) FROM events"),
                engines=one("SELECT COUNT(*) FROM engines WHERE status != 'stopped'"),
            )

        return await self.store.read(read)
