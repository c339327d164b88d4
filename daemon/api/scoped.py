"""Route tables of resources a session token sees only its own session's part of (webhooks,
schedules): the bus service checks the scope, given ``scope_of(request)``.

Every route of a ``ScopedRoutes`` table is marked ``scopes_itself`` (util.py), so the guard
does not look the session up for it (the service does, and answers 403/404 itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL
from llmgine_daemon.api.util import json_response, paged, query_choice, read_json, scopes_itself


def scope_of(request: web.Request) -> str | None:
    """The session a session token is limited to; None for a key (or the socket's owner)."""
    principal = request.get(PRINCIPAL)
    return principal.session_id if principal is not None else None


class ScopedRoutes(web.RouteTableDef):
    """A route table whose every handler checks a session token's scope itself."""

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        register = super().route(method, path, **kwargs)
        return lambda handler: register(scopes_itself(handler))


async def create_scoped(request: web.Request, model: type[msgspec.Struct], service: Any) -> web.Response:
    """``POST`` of a session-scoped resource that takes ``?if_exists=create|reuse|error`` (an
    addition to the spec, so that a setup script run twice finds the one already there: 200
    with it, or 409). ``service.create(body, scope, if_exists)`` answers the resource and
    whether it was created (201) or reused (200)."""
    body = await read_json(request, model)
    if_exists = query_choice(request, "if_exists", ("create", "reuse", "error")) or "create"
    item, created = await service.create(body, scope_of(request), if_exists)
    # A new webhook's signing secret is shown once: kept out of caches, as keys and tokens are.
    headers = {"Cache-Control": "no-store"} if getattr(item, "secret", None) else None
    return json_response(item, status=201 if created else 200, headers=headers)


async def list_scoped(request: web.Request, service: Any, field: str) -> web.Response:
    """``GET`` of a session-scoped listing: a token's own session's, or (with the key) all of
    them or ``?session_id=``'s; paged by ``?limit=&offset=``."""
    session_id = request.query.get("session_id") or None
    return json_response(paged(request, await service.list(scope_of(request), session_id), field))
