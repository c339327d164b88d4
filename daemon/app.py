"""create_app(settings): app keys, cleanup contexts, middlewares and routes."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from llmgine_daemon.api import handlers, sessions, system, tools
from llmgine_daemon.api.auth import auth_middleware
from llmgine_daemon.api.errors import error_middleware
from llmgine_daemon.api.keys import BUS, LISTENERS, SETTINGS, SHUTDOWN, WEBSOCKETS
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.sandbox.pool import SandboxLimits, SandboxPool
from llmgine_daemon.settings import Settings
from llmgine_daemon.store.db import Store

log = logging.getLogger("llmgine.app")

ROUTE_MODULES = (system, sessions, tools, handlers)


def sandbox_pool(settings: Settings) -> SandboxPool:
    limits = SandboxLimits(
        deadline=settings["sandbox.deadline"],
        memory_bytes=settings["sandbox.memory_mb"] * 2**20,
        open_files=settings["sandbox.open_files"],
        processes=settings["sandbox.max_processes"],
        file_size_bytes=settings["sandbox.file_size_mb"] * 2**20,
        max_output=settings["sandbox.max_output"],
        max_result=settings["sandbox.max_result"],
        max_depth=settings["sandbox.max_depth"],
    )
    return SandboxPool(settings.workers, limits, isolation=settings["sandbox.isolation"])


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = Store(settings.database_path, synchronous=settings["database.synchronous"])
    await store.open()
    pool = sandbox_pool(settings)
    bus = Bus(store, sandbox=pool)
    app[BUS] = bus
    try:
        await pool.start()
        await bus.start()
        yield
    finally:
        await bus.stop()
        await pool.stop()
        await store.close()


async def _close_websockets(app: web.Application) -> None:
    sockets = list(app[WEBSOCKETS])
    if sockets:
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon shutting down") for ws in sockets),
            return_exceptions=True,
        )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings["server.max_body_size"],
    )
    app[SETTINGS] = settings
    app[LISTENERS] = []
    app[SHUTDOWN] = asyncio.Event()
    app[WEBSOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_bus_ctx)
    app.on_shutdown.append(_close_websockets)
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    return app
