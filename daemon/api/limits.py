"""Limits: sizes, timeouts, identifiers and capacities, each a clear 4xx (or close code).

    request body        server.max_body_size         413 PAYLOAD_TOO_LARGE (aiohttp)
    JSON nesting        64 levels (api/util.py)      422 VALIDATION_ERROR (read_json)
    request line/header server.max_header_size       400 (aiohttp's parser; no body read)
    headers + body time server.read_timeout          idle/half-sent connections closed;
                                                     a body not complete in time: 408
    WebSocket message   server.max_ws_message_size   close 1009 (message too big)
    active sessions     security.limits.max_sessions            409 LIMIT_REACHED
    engines / session   security.limits.max_engines_per_session 409 LIMIT_REACHED
    tools / session     security.limits.max_tools_per_session   409 LIMIT_REACHED
    open WebSockets     security.limits.max_websockets          409 LIMIT_REACHED (handshake)
    ... per credential  security.limits.max_websockets_per_credential  409 LIMIT_REACHED
    path identifiers    [A-Za-z0-9][A-Za-z0-9._:-]*, no "..", <= 128: 422 VALIDATION_ERROR

Capacity checks count what is stored plus what is being created right now, so concurrent
creations cannot overshoot a maximum.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from typing import Any

import msgspec
from aiohttp import web
from llmgine_daemon.api.errors import ApiError, validation_error
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.protocol import ErrorCode
from llmgine_daemon.settings import Settings

# A leading "_" is allowed: command and event types may start with one (DELETE of a handler
# for "_Internal" must be able to name it).
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:\-]{0,127}$")


def runner_kwargs(settings: Settings) -> dict[str, Any]:
    """aiohttp server options: header limits and the idle/slow-header timeout.

    aiohttp closes a connection that has not delivered a complete request head within
    ``keepalive_timeout`` (from accept, and between keep-alive requests), which is what stops
    a slow-drip (slowloris) client from holding a connection forever.
    """
    size = settings["server.max_header_size"]
    return {
        # No access log: request lines can carry a WebSocket token in the query string.
        "access_log": None,
        "keepalive_timeout": settings["server.read_timeout"],
        # After an early answer (401, 408, 413) aiohttp drains the unread body for this long
        # before closing; a slow client must not stretch that beyond the read timeout.
        "lingering_time": min(10.0, settings["server.read_timeout"]),
        "max_line_size": size,
        "max_field_size": size,
    }


def valid_id(value: str) -> bool:
    return bool(_ID.match(value)) and ".." not in value


def _on_handler_route(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and "/handlers/" in resource.canonical


def check_identifiers(request: web.Request) -> None:
    """Every path parameter and every ``*_id`` query parameter, before any handler sees it."""
    for name, value in request.match_info.items():
        # A handler type (DELETE .../handlers/events/{type}) is free text like the type it was
        # registered with ("*", "orders/paid"): api/handlers.py checks it the same way.
        if name == "type" and _on_handler_route(request):
            continue
        if not valid_id(value):
            raise validation_error(name, "not a valid identifier", value=value[:64])
    for name, value in request.query.items():
        if name.endswith("_id") and value and not valid_id(value):
            raise validation_error(name, "not a valid identifier", value=value[:64])


async def read_body(request: web.Request, timeout: float) -> None:
    """Read (and cache) the body within ``timeout``; handlers then read it from memory.

    A client dripping its body byte by byte gets 408 instead of holding a handler forever.
    The size limit (client_max_size) applies while reading: 413.
    """
    if not request.body_exists:
        return
    if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
        await request.read()
        return
    try:
        async with asyncio.timeout(timeout):
            await request.read()
    except TimeoutError:
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT,
            f"the request body did not arrive within {timeout:g}s",
            {"read_timeout": timeout},
            headers={"Connection": "close"},
        ) from None


def json_field(body: bytes, name: str) -> Any:
    """One top-level field of a JSON body, or None (the handler reports malformed bodies)."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    return value.get(name) if isinstance(value, dict) else None


def limit_reached(limit: str, maximum: int, what: str) -> ApiError:
    return ApiError(
        ErrorCode.LIMIT_REACHED,
        f"limit reached: at most {maximum} {what} (security.limits.{limit})",
        {"limit": limit, "max": maximum},
    )


class Capacity:
    """Counts creations in flight per (limit, scope), so checks and inserts cannot race."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.in_flight: dict[tuple[str, str], int] = {}

    async def reserve(self, request: web.Request) -> tuple[str, str] | None:
        """Check the creation ``request`` would do; returns a reservation to release."""
        route = request.match_info.route
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        method = request.method
        if method != "POST":
            return None
        store = request.app[BUS].store
        if path == "/api/sessions":
            limit, scope, what = "max_sessions", "", "active sessions"

            def count(conn: sqlite3.Connection) -> int:
                return conn.execute(
                    "SELECT COUNT(*) FROM sessions WHERE status = 'active'"
                ).fetchone()[0]
        elif path == "/api/engines":
            limit, what = "max_engines_per_session", "engines in a session"
            scope = json_field(await request.read(), "session_id")
            if not isinstance(scope, str):
                return None  # the handler reports the missing field

            def count(conn: sqlite3.Connection) -> int:
                return conn.execute(
                    "SELECT COUNT(*) FROM engines WHERE session_id = ? AND status != 'stopped'",
                    (scope,),
                ).fetchone()[0]
        elif path == "/api/sessions/{session_id}/tools":
            limit, what = "max_tools_per_session", "tools in a session"
            scope = request.match_info["session_id"]
            name = json_field(await request.read(), "name")

            def count(conn: sqlite3.Connection) -> int:
                # Re-registering an existing name replaces it: it does not add one.
                if conn.execute(
                    "SELECT 1 FROM tools WHERE session_id = ? AND name = ?", (scope, name)
                ).fetchone():
                    return -1
                return conn.execute(
                    "SELECT COUNT(*) FROM tools WHERE session_id = ?", (scope,)
                ).fetchone()[0]
        else:
            return None
        maximum = self.settings[f"security.limits.{limit}"]
        if maximum <= 0:
            return None
        key = (limit, scope)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            stored = await store.read(count)
        except BaseException:
            self.release(key)
            raise
        if stored >= 0 and stored + self.in_flight[key] - 1 >= maximum:
            self.release(key)
            raise limit_reached(limit, maximum, what)
        return key

    def release(self, key: tuple[str, str] | None) -> None:
        if key is None:
            return
        left = self.in_flight.get(key, 1) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)
