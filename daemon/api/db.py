"""The database: sizes and row counts per table, VACUUM (``llmgine db stats|vacuum``)."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS, OBSERVABILITY, RETENTION
from llmgine_daemon.api.util import json_response
from llmgine_daemon.store import maintenance

routes = web.RouteTableDef()


@routes.get("/api/db/stats")
async def db_stats(request: web.Request) -> web.Response:
    retention = request.app[RETENTION].describe()
    return json_response(await maintenance.stats(request.app[BUS].store, request.app[OBSERVABILITY].telemetry,
                                                 retention))


@routes.post("/api/db/vacuum")
async def db_vacuum(request: web.Request) -> web.Response:
    return json_response(await maintenance.vacuum(request.app[BUS].store, request.app[OBSERVABILITY].telemetry))
