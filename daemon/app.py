"""create_app(settings): app keys, cleanup contexts, middlewares and routes."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from llmgine_daemon.api import (
    apidocs,
    auth,
    commands,
    db,
    engine_memory,
    engines,
    events,
    guard,
    handlers,
    observability,
    openapi,
    sessions,
    streams,
    system,
    tools,
)
from llmgine_daemon.api.errors import error_middleware
from llmgine_daemon.api.keys import (
    BUS,
    LISTENERS,
    LLM,
    OBSERVABILITY,
    RETENTION,
    SETTINGS,
    SHUTDOWN,
    WEBSOCKETS,
)
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.engines import ENGINE_TYPES
from llmgine_daemon.engines.runtime import LLMRuntime
from llmgine_daemon.observability.core import Observability
from llmgine_daemon.sandbox.pool import SandboxLimits, SandboxPool
from llmgine_daemon.settings import Settings
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.maintenance import Retention, rules_from

log = logging.getLogger("llmgine.app")

# streams before events: aiohttp matches dynamic routes in registration order, and
# /api/sessions/{id}/events/{event_id} would take "stream" for an event id.
ROUTE_MODULES = (
    system, streams, sessions, commands, events, engines, engine_memory, tools, handlers,
    observability, auth, db, openapi, apidocs,
)


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
    store = Store(settings.database_path, synchronous=settings["database.synchronous"],
                  busy_timeout=settings["database.busy_timeout"])
    await store.open()
    # Observability first in, last out: it sees the bus start and stop, and flushes its
    # buffered logs and spans before the store closes.
    obs = Observability(settings, store)
    app[OBSERVABILITY] = obs
    # Every open WebSocket is in app[WEBSOCKETS] (closed on shutdown); counting them when
    # metrics are read needs no bookkeeping in the stream handlers.
    sockets = app[WEBSOCKETS]
    obs.registry.gauge_callback("ws_subscribers", lambda: [({}, float(len(sockets)))])
    await obs.start()
    try:
        pool = sandbox_pool(settings)
        # The LLM runtime (provider clients) is shared: the bus rebuilds engines from their
        # stored records alone, so engine types get it from here.
        llm = LLMRuntime(settings)
        bus = Bus(store, engine_types={**ENGINE_TYPES, **llm.engine_types()}, sandbox=pool)
        llm.attach(bus)
        app[BUS] = bus
        app[LLM] = llm
        retention = Retention(store, rules_from(settings), settings["database.retention_interval"])
        app[RETENTION] = retention
        try:
            await pool.start()
            await bus.start()
            retention.start()
            yield
        finally:
            await retention.stop()
            await bus.stop()
            await llm.close()
            await pool.stop()
    finally:
        await obs.stop()
        await store.close()


async def _drain_commands(app: web.Application) -> None:
    """Shutdown, before in-flight requests are waited for: start no more commands; running ones
    finish (their waiting requests get answers), queued ones stay queued for the next start."""
    if BUS in app:
        app[BUS].commands.runner.drain()


async def _close_websockets(app: web.Application) -> None:
    sockets = list(app[WEBSOCKETS])
    if sockets:
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon shutting down") for ws in sockets),
            return_exceptions=True,
        )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        # observability outermost: it times and traces everything, error responses included.
        middlewares=[observability.observability_middleware, error_middleware, guard.guard_middleware],
        client_max_size=settings["server.max_body_size"],
    )
    app[SETTINGS] = settings
    app[LISTENERS] = []
    app[SHUTDOWN] = asyncio.Event()
    app[WEBSOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_bus_ctx)
    # After the bus: credentials live in its store. Guards every route, present and future.
    guard.install(app, settings)
    app.on_shutdown.append(_drain_commands)
    # After the bus: streams start once it is up and end (1001) before it stops.
    app.cleanup_ctx.append(streams.streams_ctx)
    app.on_shutdown.append(streams.close_streams)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(observability.stamp_traceparent)
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    return app
