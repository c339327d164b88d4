"""Route tables of resources a session token sees only its own session's part of (webhooks,
schedules): the bus service checks the scope, given ``scope_of(request)``.

Every route of a ``ScopedRoutes`` table is marked ``scopes_itself`` (util.py), so the guard
does not look the session up for it (the service does, and answers 403/404 itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL
from llmgine_daemon.api.util import scopes_itself


def scope_of(request: web.Request) -> str | None:
    """The session a session token is limited to; None for a key (or the socket's owner)."""
    principal = request.get(PRINCIPAL)
    return principal.session_id if principal is not None else None


class ScopedRoutes(web.RouteTableDef):
    """A route table whose every handler checks a session token's scope itself."""

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        register = super().route(method, path, **kwargs)
        return lambda handler: register(scopes_itself(handler))
