"""One place turns every failure into the one error envelope (datasette's handle_exception).

    {"error": {"code", "message", "details"}, "timestamp", "request_id"}

Sources of errors, all turned into it by ``envelope_for`` (the edge, api/edge.py, calls it for
whatever a request raised):
- BusError            raised by the domain (bus/), carries a protocol.ErrorCode
- web.HTTPException   raised by aiohttp itself: unknown route, wrong method, body too large
- StorageBusy/Full    the database could not take the write (503 / 507)
- StorageRefused      nor the value as given: a NUL in text, on PostgreSQL (422)
- anything else       a bug: 500 INTERNAL_ERROR, traceback to the log, never to the client
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from llmgine_daemon import __version__
from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.bus.errors import (
    BusError,
    StorageBusy,
    StorageDamaged,
    StorageError,
    StorageFull,
    StorageRefused,
    StorageUnavailable,
)
from llmgine_daemon.protocol import (
    ERROR_STATUS,
    REQUEST_ID_HEADER,
    VERSION_HEADER,
    ErrorBody,
    ErrorCode,
    ErrorEnvelope,
    now_iso,
)

log = logging.getLogger("llmgine.api")

REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: ErrorCode.INVALID_JSON,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SHUTTING_DOWN,
}


class ApiError(BusError):
    """An error raised at the edge (decoding, validation, auth); same shape as BusError."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, details)
        self.status = status
        self.headers = headers or {}


def error_response(
    request_id: str,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    envelope = ErrorEnvelope(
        error=ErrorBody(code=code, message=message, details=details or {}),
        timestamp=now_iso(),
        request_id=request_id,
    )
    response = web.Response(
        body=msgspec.json.encode(envelope),
        status=status or ERROR_STATUS.get(code, 500),
        content_type="application/json",
        headers=headers,
    )
    if headers and headers.get("Connection", "").lower() == "close":
        # An answer given before the body was read (413, 408, an unreadable body): the
        # connection ends with it. The header alone does not end it: aiohttp would keep it
        # alive, draining the rest of the body for up to lingering_time, or (its pure-Python
        # parser, after an undecodable body) reading the rest as the next request.
        response.force_close()
    return response


def request_id_of(request: web.Request) -> str:
    return request.get(REQUEST_ID) or "-"


def request_method(exc: web.HTTPException) -> str:
    return str(getattr(exc, "method", "")) or "this method"


def _from_http_exception(request_id: str, exc: web.HTTPException) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.VALIDATION_ERROR)
    headers = {
        k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after", "www-authenticate", "connection"}
    }
    details: dict[str, Any] = {}
    if status == 404:
        message = "no such endpoint"
    elif status == 405:
        message = f"method {request_method(exc)} not allowed on this path"
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        details = {"allowed_methods": allowed}
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    elif status == 413:
        message = "request body too large"
        details = {"issue": exc.text or ""}
    else:
        message = exc.reason or exc.text or "request failed"
    return error_response(request_id, code, message, details, status=status, headers=headers)


def settle_request_id(request: web.Request) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is a sane token, else a new one;
    kept as request[REQUEST_ID] and put on the response by ``stamp_response``."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    return request_id


def request_id_from(supplied: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one."""
    # new_id: a pooled random read, not uuid4's getrandom syscall per request (bench/README.md).
    return supplied if supplied and _REQUEST_ID_OK.match(supplied) else new_id()


def envelope_for(request: web.Request, request_id: str, exc: Exception) -> web.Response:
    """The one error envelope for whatever a request raised (see the module docstring). A
    redirect (an HTTPException below 400) is not an error: it is raised on."""
    return error_envelope(request_id, exc, f"{request.method} {request.path}")


def error_envelope(request_id: str, exc: Exception, where: str) -> web.Response:
    """``envelope_for`` without the request: ``where`` (method and path) names it in the log."""
    if isinstance(exc, ApiError):
        return error_response(request_id, exc.code, exc.message, exc.details, status=exc.status, headers=exc.headers)
    if isinstance(exc, BusError):
        return error_response(request_id, exc.code, exc.message, exc.details)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _from_http_exception(request_id, exc)
    if isinstance(exc, StorageBusy):
        log.warning("storage busy: %s (request %s)", exc, request_id)
        details: dict[str, Any] = {}
        if exc.busy_timeout is not None:  # gave up at its deadline (database.busy_timeout)
            details = {"setting": "database.busy_timeout", "busy_timeout": exc.busy_timeout, "waited": exc.waited}
        # Unreachable (PostgreSQL down or restarting), locked (a write that waited for SQLite's
        # lock), or busy otherwise (PostgreSQL: a deadlock, a serialization failure, the server's
        # statement_timeout): either way try again; where and why stay in the daemon's log.
        if isinstance(exc, StorageUnavailable):
            what = "not reachable"
        else:
            what = "busy (locked by another process)" if exc.busy_timeout is not None else "busy"
        return error_response(
            request_id,
            ErrorCode.STORAGE_BUSY,
            f"the database is {what}; try again",
            details,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, StorageFull):
        log.error("storage full: %s (request %s)", exc, request_id)
        return error_response(
            request_id,
            ErrorCode.INSUFFICIENT_STORAGE,
            "the database cannot grow (disk full); nothing was written",
        )
    if isinstance(exc, StorageDamaged):  # one line: a traceback would say nothing more
        log.error("storage damaged: %s (request %s)", exc, request_id)
        return error_response(
            request_id,
            ErrorCode.STORAGE_DAMAGED,
            "the database file is damaged; the daemon's operator must restore it from a backup",
        )
    if isinstance(exc, StorageRefused):
        return error_response(
            request_id,
            ErrorCode.VALIDATION_ERROR,
            "a text in the request holds a NUL character (U+0000), which the database (PostgreSQL) cannot store",
            {"issue": "NUL character in text"},
        )
    if isinstance(exc, StorageError):
        log.error("storage error: %s (request %s)", exc, request_id)
        return error_response(request_id, ErrorCode.INTERNAL_ERROR, "storage error")
    log.error("unhandled error in %s (request %s)", where, request_id, exc_info=exc)
    return error_response(
        request_id,
        ErrorCode.INTERNAL_ERROR,
        f"internal error; see the daemon log for request {request_id}",
    )


def stamp_response(response: web.StreamResponse, request_id: str) -> None:
    """The request id and the daemon's version on every answer not already sent (a WebSocket
    handshake or an event stream went out when its handler prepared it: ``stamp_prepared``
    gave them theirs)."""
    if not response.prepared:
        headers = response.headers
        headers[REQUEST_ID_HEADER] = request_id
        headers[VERSION_HEADER] = __version__


def stamp_prepared(request: web.Request, response: web.StreamResponse) -> None:
    """The same two headers on an answer its handler sends itself, as it is prepared (the
    edge's ``on_response_prepare`` hook): an event stream, a WebSocket's handshake."""
    headers = response.headers
    if REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id_of(request)
        headers[VERSION_HEADER] = __version__
