"""Token usage and estimated cost (bus/usage.py): ``GET /api/usage``. The per-resource sums
ride on their own records (``usage`` of a command, batch, engine, session)."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.observability import query_id, query_time
from llmgine_daemon.api.util import json_response, query_choice
from llmgine_daemon.bus.usage import BY_COLUMNS

routes = web.RouteTableDef()


@routes.get("/api/usage")
async def get_usage(request: web.Request) -> web.Response:
    """Sums over commands; a session token sees only its own session (api/guard.py)."""
    by = query_choice(request, "by", tuple(BY_COLUMNS))
    bus = request.app[BUS]
    session_id = query_id(request, "session_id")
    if session_id:
        await bus.sessions.get(session_id)  # SESSION_NOT_FOUND for an unknown one, as metrics say
    report = await bus.usage.report(session_id, query_time(request, "since"), by)
    return json_response(report)
