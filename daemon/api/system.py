"""Spec section 8: health, status, configuration, shutdown."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from llmgine_daemon import __version__
from llmgine_daemon.api.keys import BUS, DATABASE, LISTENERS, SETTINGS, SHUTDOWN
from llmgine_daemon.api.util import json_response
from llmgine_daemon.protocol import (
    ConfigValue,
    ConfigView,
    Health,
    ShutdownAccepted,
    Status,
    now_iso,
)
from llmgine_daemon.settings import SETTINGS as SETTING_TABLE

routes = web.RouteTableDef()


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    # degraded: the last write or read could not reach the database (PostgreSQL down or
    # restarting; requests meanwhile answer 503 STORAGE_BUSY), or the last write transaction
    # found the disk full (507), or a read or write found the database file damaged (503
    # STORAGE_DAMAGED, until an operator restores it). Still 200: the daemon runs.
    if request.app[SHUTDOWN].is_set():
        status = "shutting_down"
    else:
        failing = bus.storage_unreachable or bus.storage_full or bus.storage_damaged
        status = "degraded" if failing else "healthy"
    return json_response(Health(status=status, timestamp=now_iso(), version=__version__, uptime=int(bus.uptime)))


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    return json_response(
        Status(
            status="shutting_down" if request.app[SHUTDOWN].is_set() else "running",
            version=__version__,
            uptime=bus.uptime,
            pid=os.getpid(),
            started_at=bus.started_at,
            listeners=request.app[LISTENERS],
            # Both files: the main database and the telemetry one (logs and spans) beside it.
            storage=request.app[DATABASE].info(),
            counts=await bus.counts(),
            sandbox=bus.sandbox.info() if bus.sandbox is not None else {},
            cluster=await bus.cluster.info(),
        )
    )


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        ConfigView(
            config_file=str(settings.config_file),
            settings=[
                ConfigValue(key=s.key, env=s.env, value=settings.redacted(s.key), source=settings.sources[s.key])
                for s in SETTING_TABLE
            ],
        )
    )


@routes.post("/api/shutdown")
async def shutdown(request: web.Request) -> web.Response:
    # Answer first, then stop: the event is set after this response has been sent.
    asyncio.get_running_loop().call_later(0.05, request.app[SHUTDOWN].set)
    return json_response(ShutdownAccepted(status="shutting_down", message="llmgined is shutting down"), status=202)
