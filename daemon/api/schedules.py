"""Schedules: commands submitted on a cron expression, an interval or once (bus/schedules.py).

    POST   /api/schedules                         {cron|every|at, command, session_id, timezone, missed} -> 201
    GET    /api/schedules[?session_id=]           -> {schedules, total}
    GET    /api/schedules/{schedule_id}           -> the schedule, with its next firing times
    POST   /api/schedules/{schedule_id}/pause     -> the schedule (paused)
    POST   /api/schedules/{schedule_id}/resume    -> the schedule (active, from the next firing)
    DELETE /api/schedules/{schedule_id}           -> 204

A session token manages its own session's schedules only (bus/scoping.py).
"""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.scoped import ScopedRoutes, create_scoped, list_scoped, scope_of
from llmgine_daemon.api.util import json_response, path_id
from llmgine_daemon.protocol import ScheduleCreate

routes = ScopedRoutes()


@routes.post("/api/schedules")
async def create_schedule(request: web.Request) -> web.Response:
    return await create_scoped(request, ScheduleCreate, request.app[BUS].schedules)


@routes.get("/api/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    return await list_scoped(request, request.app[BUS].schedules, "schedules")


@routes.get("/api/schedules/{schedule_id}")
async def get_schedule(request: web.Request) -> web.Response:
    return json_response(await request.app[BUS].schedules.get(path_id(request, "schedule_id"), scope_of(request)))


@routes.post("/api/schedules/{schedule_id}/pause")
async def pause_schedule(request: web.Request) -> web.Response:
    schedules = request.app[BUS].schedules
    return json_response(await schedules.set_paused(path_id(request, "schedule_id"), scope_of(request), True))


@routes.post("/api/schedules/{schedule_id}/resume")
async def resume_schedule(request: web.Request) -> web.Response:
    schedules = request.app[BUS].schedules
    return json_response(await schedules.set_paused(path_id(request, "schedule_id"), scope_of(request), False))


@routes.delete("/api/schedules/{schedule_id}")
async def delete_schedule(request: web.Request) -> web.Response:
    await request.app[BUS].schedules.delete(path_id(request, "schedule_id"), scope_of(request))
    return web.Response(status=204)
