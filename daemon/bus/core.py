"""The Bus: the domain core the API calls. It never imports aiohttp.

It owns the store and the runtime parts (event fan-out; later the command runner, engines and
the sandbox pool), each in its own module named after its resource.
"""

from __future__ import annotations

import sqlite3
import time

from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.events import EventLog
from llmgine_daemon.bus.sandbox import SandboxBridge
from llmgine_daemon.bus.sessions import Sessions
from llmgine_daemon.bus.tools import Tools
from llmgine_daemon.bus.user_handlers import UserHandlers
from llmgine_daemon.protocol import CallErrorCode, StatusCounts, now_iso
from llmgine_daemon.sandbox.pool import SandboxPool
from llmgine_daemon.store.db import Store


class Bus:
    def __init__(self, store: Store, sandbox: SandboxPool | None = None) -> None:
        self.store = store
        self.started_at = now_iso()
        self._started_monotonic = time.monotonic()
        self.events = EventLog()
        self.sessions = Sessions(self)
        # User code (tools, handlers) runs in the sandbox pool; the app starts and stops it.
        self.sandbox = sandbox
        self.sandbox_bridge = SandboxBridge(self, sandbox) if sandbox is not None else None
        self.tools = Tools(self)
        self.user_handlers = UserHandlers(self)

    def sandbox_pool(self) -> SandboxPool:
        if self.sandbox is None:
            raise BusError(CallErrorCode.SANDBOX_UNAVAILABLE, "user code is disabled: no sandbox")
        return self.sandbox

    @property
    def uptime(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)

    async def start(self) -> None:
        """Bring runtime state back after a restart (resources register their own steps)."""
        await self.user_handlers.start()

    async def stop(self) -> None:
        """Stop runtime work; queued work stays queued in the store for the next start."""
        await self.user_handlers.stop()

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
