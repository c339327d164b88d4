"""Typed application state (web.AppKey), shared by the route modules."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web
from llmgine_daemon.bus.auth import Credentials
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.database import Database
from llmgine_daemon.bus.streams import StreamHub
from llmgine_daemon.engines.context import EngineContext
from llmgine_daemon.observability.core import Observability
from llmgine_daemon.settings import Settings

BUS = web.AppKey("bus", Bus)
SETTINGS = web.AppKey("settings", Settings)
# Metrics registry, tracer and log sink of this daemon (observability/core.py).
OBSERVABILITY = web.AppKey("observability", Observability)
# Where the daemon listens, as URLs; filled in by the server once its sites are up.
LISTENERS = web.AppKey("listeners", list[str])
# Set to ask the server to shut down gracefully (POST /api/shutdown, signals).
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
# Why the daemon stops by itself (set with SHUTDOWN): the server then exits 1 saying so.
FATAL = web.AppKey("fatal", list[str])
# Open WebSockets, closed with 1001 on shutdown.
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
# LLM engines' providers (HTTP connection pool) and conversation memory: their EngineContext.
LLM = web.AppKey("llm", EngineContext)
# Both database files, and the background pruning of events, logs and spans (its settings
# and counters show in db stats).
DATABASE = web.AppKey("database", Database)
# API keys and session tokens (bus/auth.py); the guard's own state is api/guard.GUARD.
CREDENTIALS = web.AppKey("credentials", Credentials)
# Live event streams (api/streams.py): the subscriber registry, started after the bus.
STREAMS = web.AppKey("streams", StreamHub)
