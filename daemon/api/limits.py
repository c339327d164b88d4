"""Limits: sizes, timeouts, identifiers and capacities, each a clear 4xx (or close code).

    request body        server.max_body_size         413 PAYLOAD_TOO_LARGE (aiohttp)
    JSON nesting        64 levels (api/util.py)      422 VALIDATION_ERROR (read_json)
    Expect              100-continue only, sent once the guard passed   417 VALIDATION_ERROR
    request line/header server.max_header_size       400 VALIDATION_ERROR (aiohttp's parser refuses
                                                     it; api/malformed.py answers)
    request head        8 x server.max_header_size   400 VALIDATION_ERROR (api/malformed.py)
    headers + body time server.read_timeout          idle/half-sent connections closed;
                                                     a body not complete in time: 408
    WebSocket message   server.max_ws_message_size   close 1009 (message too big)
    active sessions     security.limits.max_sessions            409 LIMIT_REACHED (bus)
    engines / session   security.limits.max_engines_per_session 409 LIMIT_REACHED (bus)
    tools / session     security.limits.max_tools_per_session   409 LIMIT_REACHED (bus)
    handlers / session  security.limits.max_handlers_per_session  409 LIMIT_REACHED (bus)
    open WebSockets     security.limits.max_websockets          409 LIMIT_REACHED (handshake)
    ... per credential  security.limits.max_websockets_per_credential  409 LIMIT_REACHED
    identifiers         protocol.grammar.Id: [A-Za-z0-9_][A-Za-z0-9._:-]*, no "..", <= 128,
                        in the path and in the *_id query parameters a route takes: 422
                        VALIDATION_ERROR (another is ignored, as any unknown parameter)

Capacities are the bus's rules, checked inside the creating write (bus/capacity.py), so
concurrent creations cannot overshoot a maximum.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.api.openapi import OPERATIONS
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import ErrorCode, valid_id
from llmgine_daemon.settings import Settings


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
        "keepalive_timeout": settings.read_timeout,
        # After an early answer (401, 408, 413) aiohttp drains the unread body for this long
        # before closing; a slow client must not stretch that beyond the read timeout.
        "lingering_time": min(10.0, settings.read_timeout),
        "max_line_size": size,
        "max_field_size": size,
    }


def _on_handler_route(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and "/handlers/" in resource.canonical


def check_identifiers(request: web.Request) -> None:
    """Every path parameter and every ``*_id`` query parameter the route takes, before any handler sees it:
    the one place identifiers are checked (route handlers take them as they are)."""
    for name, value in request.match_info.items():
        # A handler type (DELETE .../handlers/events/{type}) is free text like the type it was
        # registered with ("*", "orders/paid"): api/handlers.py checks it the same way.
        if name == "type" and _on_handler_route(request):
            continue
        if not valid_id(value):
            raise invalid(name, "not a valid identifier", value=value[:64])
    if not request.query_string:
        return
    declared = _query_ids(request)
    for name, value in request.query.items():
        if name.endswith("_id") and value and (declared is None or name in declared) and not valid_id(value):
            raise invalid(name, "not a valid identifier", value=value[:64])


# The ``*_id`` query parameters each route takes, as api/operations.py describes them.
_QUERY_IDS = {
    key: frozenset(p.name for p in op.params if p.location == "query" and p.name.endswith("_id"))
    for key, op in OPERATIONS.items()
}


def _query_ids(request: web.Request) -> frozenset[str] | None:
    """The ``*_id`` query parameters the route takes; any other is ignored, as every unknown
    query parameter is (FastAPI's way). None: a route not described (all are checked). No
    route, or not this method: none (the answer is 404 or 405, not 422 for a parameter)."""
    if request.match_info.http_exception is not None:
        return frozenset()
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return _QUERY_IDS.get(("GET" if request.method == "HEAD" else request.method, resource.canonical))


async def read_body(request: web.Request, timeout: float) -> None:
    """Read (and cache) the body within ``timeout``; handlers then read it from memory.

    A client dripping its body byte by byte gets 408 instead of holding a handler forever.
    The size limit (client_max_size) applies while reading: 413, and at once for a body whose
    ``Content-Length`` is over it (a client must not hold the request open for a body that
    would be refused anyway).
    """
    if not request.body_exists:
        return
    declared, limit = request.content_length, request.client_max_size
    if declared is not None and limit and declared > limit:  # no need to wait for it: 413 now
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared, headers={"Connection": "close"})
    if request.get(CONTINUE) and not request.content.is_eof():  # the client waits for this
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # not the answer's head: that is still to come
    try:
        if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
            await request.read()
            return
        async with asyncio.timeout(timeout):
            await request.read()
    except TimeoutError:
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT,
            f"the request body did not arrive within {timeout:g}s",
            {"read_timeout": timeout},
            headers={"Connection": "close"},
        ) from None
    except (HttpProcessingError, RequestPayloadError) as exc:  # e.g. gzip named, not sent
        message = " ".join(str(getattr(exc, "message", "") or exc).split()).removeprefix("400, message: ")[:200]
        request.content.feed_eof()  # the rest is unreadable: aiohttp must not drain it after the answer
        raise ApiError(
            ErrorCode.INVALID_JSON,
            f"the request body could not be read: {message}",
            {"content_encoding": request.headers.get("Content-Encoding", "")[:64]},
            headers={"Connection": "close"},
        ) from None
    except ConnectionResetError:  # the client went away mid-body: nobody to answer (499)
        raise asyncio.CancelledError from None


# Expect: 100-continue, answered once the request passed the guard (read_body), not before;
# any other expectation is answered 417 at the same point (check_expectation).
CONTINUE = web.RequestKey("expects_continue", bool)
EXPECTATION = web.RequestKey("unsupported_expectation", str)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Every route's ``expect_handler`` (app.py). aiohttp's own answers ``100 Continue`` before
    any middleware runs, so a client without a credential was invited to send its body; here
    nothing is answered: ``100 Continue`` waits until the body is about to be read
    (``read_body``, after the Host/Origin check, the credential, rate limits and size checks),
    and any other expectation is 417 in the envelope at that point (``check_expectation``),
    not before those checks."""
    if request.version < (1, 1):
        return None  # an HTTP/1.0 client's Expect is ignored (RFC 9110 10.1.1)
    expect = request.headers.get("Expect", "")
    if expect.lower() == "100-continue":
        request[CONTINUE] = True
    else:
        request[EXPECTATION] = expect
    return None


def check_expectation(request: web.Request) -> None:
    """The guard's step before the body: an Expect other than 100-continue is 417. Called only
    for a request with an Expect header: a key missing from a request's state costs a raised
    KeyError (~0.4 µs, Mapping.get), which every request would pay."""
    expect = request.get(EXPECTATION)
    if expect is not None:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "unsupported Expect header: only 100-continue is",
            {"expect": expect[:64]},
            status=417,
            headers={"Connection": "close"},
        )


def json_field(body: bytes, name: str) -> Any:
    """One top-level field of a JSON body, or None (the handler reports malformed bodies)."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    return value.get(name) if isinstance(value, dict) else None
