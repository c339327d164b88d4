"""Webhooks: signed HTTP callbacks for events (bus/webhooks.py).

    POST   /api/webhooks                          {url, events, session_id?, secret?} -> 201 (secret shown once)
    GET    /api/webhooks[?session_id=]            -> {webhooks, total}
    GET    /api/webhooks/{webhook_id}             -> the webhook (no secret), with delivery counts
    DELETE /api/webhooks/{webhook_id}             -> 204
    GET    /api/webhooks/{webhook_id}/deliveries  -> {deliveries (each with its attempts), total, ...}

API keys manage every webhook; a session token only its own session's (registering one for
another session, or for all sessions, is 403; another session's is 404).
"""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.scoped import ScopedRoutes, create_scoped, list_scoped, scope_of
from llmgine_daemon.api.util import json_response, limit_offset, path_id, query_choice
from llmgine_daemon.protocol import WebhookCreate
from llmgine_daemon.protocol.hooks import DELIVERY_STATUSES

routes = ScopedRoutes()


@routes.post("/api/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    return await create_scoped(request, WebhookCreate, request.app[BUS].webhooks)


@routes.get("/api/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    return await list_scoped(request, request.app[BUS].webhooks, "webhooks")


@routes.get("/api/webhooks/{webhook_id}")
async def get_webhook(request: web.Request) -> web.Response:
    return json_response(await request.app[BUS].webhooks.get(path_id(request, "webhook_id"), scope_of(request)))


@routes.delete("/api/webhooks/{webhook_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    await request.app[BUS].webhooks.delete(path_id(request, "webhook_id"), scope_of(request))
    return web.Response(status=204)


@routes.get("/api/webhooks/{webhook_id}/deliveries")
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    limit, offset = limit_offset(request)
    status = query_choice(request, "status", DELIVERY_STATUSES)
    page = await request.app[BUS].webhooks.deliveries(
        path_id(request, "webhook_id"), scope_of(request), status=status, limit=limit, offset=offset
    )
    return json_response(page)
