"""The database: sizes and row counts per table, VACUUM (``llmgine db stats|vacuum``)."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import DATABASE
from llmgine_daemon.api.util import json_response

routes = web.RouteTableDef()


@routes.get("/api/db/stats")
async def db_stats(request: web.Request) -> web.Response:
    return json_response(await request.app[DATABASE].stats())


@routes.post("/api/db/vacuum")
async def db_vacuum(request: web.Request) -> web.Response:
    return json_response(await request.app[DATABASE].vacuum())
