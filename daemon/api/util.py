"""Decoding requests and encoding responses, shared by every route module."""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.bus.idempotency import IdempotencyKey
from llmgine_daemon.bus.pages import LongPage
from llmgine_daemon.protocol import MAX_JSON_DEPTH, ErrorCode, integral
from llmgine_daemon.protocol.base import json_too_deep
from llmgine_daemon.protocol.grammar import validation_issue
from multidict import MultiDict, MultiDictProxy

T = TypeVar("T")
H = TypeVar("H")

# SQLite's INTEGER: a larger offset or cursor would overflow in the driver (a 500, not a 422).
MAX_SQL_INT = 2**63 - 1

_encoder = msgspec.json.Encoder()
# The body as decoded by read_json: (model, empty_ok, value). A request's body is decoded once,
# whoever asks first (the guard's session scope check, then the handler, get the same value).
_DECODED: web.RequestKey[tuple[type, bool, Any]] = web.RequestKey("decoded_body", tuple)


# Routes that take Python source (tools, handlers) carry this mark; the guard refuses them to
# session tokens unless sandbox.session_token_registration allows it (api/guard.py).
_REGISTERS_CODE = "llmgine_registers_code"


def registers_code(handler: H) -> H:
    """Mark a route handler as one that registers user code."""
    setattr(handler, _REGISTERS_CODE, True)
    return handler


def takes_code(handler: Any) -> bool:
    return bool(getattr(handler, _REGISTERS_CODE, False))


# Routes whose resources name their session in a row, not in the path (webhooks, schedules):
# the guard lets a session token through and the bus holds it to its own session's rows.
_OWN_SCOPE = "llmgine_scopes_itself"


def scopes_itself(handler: H) -> H:
    """Mark a route handler whose bus call checks a session token's scope itself."""
    setattr(handler, _OWN_SCOPE, True)
    return handler


def checks_own_scope(handler: Any) -> bool:
    return bool(getattr(handler, _OWN_SCOPE, False))


def too_deep_error() -> ApiError:
    return invalid(
        "body",
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels (objects and arrays)",
        max_depth=MAX_JSON_DEPTH,
    )


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json", headers=headers)


def _split(encoded: bytes, field: str) -> int:
    """Where the (empty) list ``field`` of an encoded object opens: the offset just past its
    ``[``. A key's opening quote is never escaped, one inside a string always is, so the
    first ``"field":[]`` is the field's own (the fields before it are not objects)."""
    marker = b'"%s":[]' % field.encode()
    at = encoded.index(marker)
    return at + len(marker) - 1


async def page_response(
    request: web.Request, page: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """A listing's page: whole, or a ``LongPage`` (bus/pages.py) sent part by part, each read
    once the one before is written, so that the daemon never holds much more than
    PAGE_BYTES of it. The same JSON either way (chunked, without Content-Length): the
    envelope's fields before the list, the list part by part, the fields after it."""
    if not isinstance(page, LongPage):
        return json_response(page, status, headers)
    response = web.StreamResponse(status=status, headers={**(headers or {}), "Content-Type": "application/json"})
    await response.prepare(request)
    try:
        head = _encoder.encode(page.envelope(page.items[-1]))
        await response.write(head[: _split(head, page.field)] + b",".join(map(_encoder.encode, page.items)))
        last, key, left = page.items[-1], page.key, page.count - len(page.items)
        while left > 0:
            part, key = await page.more(key, left)
            if not part:
                break
            await response.write(b"," + b",".join(map(_encoder.encode, part)))
            last, left = part[-1], left - len(part)
        # The fields that follow the (empty) list in the envelope's own encoding.
        rest = _encoder.encode(page.envelope(last))
        await response.write(rest[_split(rest, page.field) :])
        await response.write_eof()
    except ConnectionError:  # the client went away mid-page: nobody to answer (499)
        raise asyncio.CancelledError from None
    except BaseException:
        # The 200 and part of the page are sent: no error answer can follow (the edge's would
        # be written into this body). The connection ends without the body's last chunk, so
        # the client sees the page cut short; the edge logs the error and counts its status.
        if request.transport is not None:
            request.transport.close()
        raise
    return response


async def read_json(request: web.Request, model: type[T], *, empty_ok: bool = False) -> T:
    """Decode and validate the body as ``model`` in one step.

    Only ``application/json`` (or ``+json``, or no Content-Type at all, as FastAPI reads it)
    is accepted: besides being the contract, it keeps plain HTML forms (which cannot send
    JSON) from making state-changing requests.

    Decoded once per request: a second call with the same model returns the first's value.
    """
    cached = request.get(_DECODED)
    if cached is not None and cached[0] is model and cached[1] == empty_ok:
        return cached[2]
    value = await _decode(request, model, empty_ok)
    request[_DECODED] = (model, empty_ok, value)
    return value


async def _decode(request: web.Request, model: type[T], empty_ok: bool) -> T:
    body = await request.read()
    # Empty is no body (where one may be left out); whitespace alone is not JSON (INVALID_JSON
    # below), as any JSON parser says, FastAPI's included.
    if not body:
        if empty_ok:
            body = b"{}"
        else:
            raise invalid("body", "Request body is required")
    elif (
        request.content_type not in ("application/json",)
        and not request.content_type.endswith("+json")
        # No Content-Type at all is read as JSON, as FastAPI reads it (Python's
        # `requests.post(url, data=json.dumps(...))` sends none); an HTML form always sends
        # one, and a browser's request without one still passes the Origin check (guard).
        and "Content-Type" in request.headers
    ):
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"expected Content-Type application/json, got {request.content_type}",
            {"content_type": request.content_type},
        )
    return decode_body(body, model)


def decode_body(body: bytes, model: type[T]) -> T:
    """A JSON body as ``model`` (``read_json``'s decoding, the fast lane's too: api/fastroutes.py);
    422/INVALID_JSON as an error of its own."""
    # One rule for nesting, whatever the model: MAX_JSON_DEPTH (checked once the text is known
    # to be JSON, so a malformed body is still INVALID_JSON).
    try:
        value = integral.decode(body, model)  # 26.0 for an integer, as pydantic takes it
    except msgspec.ValidationError as exc:
        if json_too_deep(body):
            raise too_deep_error() from None
        field, issue = validation_issue(str(exc))
        raise invalid(field, issue) from None
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.INVALID_JSON, f"malformed JSON: {exc}", {"issue": str(exc)}) from None
    except RecursionError:  # far deeper than the limit: the decoder gave up first
        raise too_deep_error() from None
    if json_too_deep(body):
        raise too_deep_error()
    return value


# An integer in a query, as pydantic (FastAPI) reads one: ASCII digits, `_` between them, an
# optional sign, spaces around, and `.0` (`?limit=26.0`, an integer to JSON Schema) allowed.
_INTEGER = re.compile(r"\s*[+-]?[0-9](?:_?[0-9])*(?:\.0+)?\s*")


# -- the query: one value per name, as FastAPI reads it ---------------------------------------

# A repeated query parameter (`?limit=1&limit=2`) is its LAST value, as FastAPI (Starlette's
# QueryParams) reads a scalar parameter; a list parameter (the streams' `event_type` and
# `source`, the command listings' `status`) takes every value (``query_all``). settle_query
# runs first on every request (the edge), so the guard's checks and the route see the same
# value.
_ALL_QUERY: web.RequestKey[MultiDictProxy[str]] = web.RequestKey("all_query", MultiDictProxy)


def settle_query(request: web.Request) -> None:
    """Make ``request.query`` hold each name's last value, when a name is repeated."""
    if not request.query_string:
        return
    query = request.query
    if len(query) < 2 or len(set(query)) == len(query):
        return
    last: MultiDict[str] = MultiDict()
    for name, value in query.items():
        last[name] = value  # replaces the earlier value
    request[_ALL_QUERY] = query  # type: ignore[assignment]
    # ``request.query`` is a cached property (aiohttp's reify): its cache is where it is read.
    request._cache["query"] = MultiDictProxy(last)  # type: ignore[attr-defined]


def query_all(request: web.Request, name: str) -> list[str]:
    """Every value of a list parameter (``?event_type=A&event_type=B``), in order."""
    return request.get(_ALL_QUERY, request.query).getall(name, [])


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if maximum is None:
        maximum = MAX_SQL_INT
    try:
        if not _INTEGER.fullmatch(raw):
            raise ValueError(raw)
        value = int(raw.strip().split(".", 1)[0])
    except ValueError:  # (also over int()'s 4300 digits)
        raise invalid(name, "must be an integer", value=raw[:64]) from None
    if value < minimum or value > maximum:
        bound = f"from {minimum} to {maximum}"
        raise invalid(name, f"must be {bound}", value=value)
    return value


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on", "t", "y"}:  # pydantic's (FastAPI's) words
        return True
    if lowered in {"0", "false", "no", "off", "f", "n"}:
        return False
    raise invalid(name, "must be true or false", value=raw[:64])


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise invalid(name, f"must be one of {', '.join(choices)}", value=raw[:64])
    return raw


def path_id(request: web.Request, name: str) -> str:
    """A path identifier. Already checked against the grammar's ``Id`` (no NUL, ../ or
    lookalikes) by the guard's scope step (api/limits.py), before any handler runs."""
    return request.match_info[name]


def query_statuses(request: web.Request, allowed: tuple[str, ...]) -> list[str] | None:
    """``?status=a,b`` (or ``?status=a&status=b``, as a FastAPI list parameter: every value,
    not the last alone): the statuses asked for (None: not given), each one of ``allowed``."""
    raw = ",".join(query_all(request, "status"))
    if not raw:
        return None
    statuses = [s.strip() for s in raw.split(",") if s.strip()]
    if any(s not in allowed for s in statuses):
        raise invalid(
            "status",
            f"must be one or more (comma-separated) of {', '.join(allowed)}",
            value=raw[:64],
        )
    return statuses or None


S = TypeVar("S", bound=msgspec.Struct)


def paged(request: web.Request, listing: S, field: str) -> S:
    """The ``?limit=&offset=`` page of a listing the daemon holds whole (tools, handlers, keys,
    secrets, webhooks, schedules, MCP servers, approvals: each bounded by a setting), with its
    ``limit`` and ``offset`` as every listing says them; all of it when no ``limit`` is given,
    as before these lists took one. ``total`` still counts them all."""
    limit = query_int(request, "limit", 50, minimum=1, maximum=1000) if request.query.get("limit") else None
    offset = query_int(request, "offset", 0, minimum=0)
    items = getattr(listing, field)
    page = items[offset:] if limit is None else items[offset : offset + limit]
    return msgspec.structs.replace(listing, **{field: page, "limit": limit, "offset": offset})


def limit_offset(request: web.Request, default_limit: int = 50) -> tuple[int, int]:
    return (
        query_int(request, "limit", default_limit, minimum=1, maximum=1000),
        query_int(request, "offset", 0, minimum=0),
    )


# -- waiting and idempotency (commands, batches, events, engine execute) -------------------

MAX_WAIT_S = 300.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9.]+)\"?", re.IGNORECASE)


def wait_seconds(request: web.Request, default: float = 0.0) -> tuple[float, bool]:
    """How long to hold the response for the work to finish: ``?wait=N`` or RFC 7240's
    ``Prefer: wait=N``. Returns (seconds, whether it came from Prefer)."""
    raw = request.query.get("wait")
    if raw is None or raw == "":
        return _prefer_wait(request.headers.get("Prefer", ""), default)
    try:
        value = float(raw)
    except ValueError:
        raise invalid("wait", "must be a number of seconds", value=raw[:64]) from None
    if not 0 <= value <= MAX_WAIT_S:
        raise invalid("wait", f"must be from 0 to {MAX_WAIT_S:g} seconds", value=value)
    return value, False


def _prefer_wait(header: str, default: float) -> tuple[float, bool]:
    """``Prefer: wait=N`` is a preference, not a parameter: RFC 7240 says a server ignores
    one it cannot honour rather than refuse the request. A wait past ``MAX_WAIT_S`` is held
    that long (``Preference-Applied`` says how long); one that is not a number is ignored."""
    match = _PREFER_WAIT.search(header)
    if match is None:
        return default, False
    try:
        value = float(match.group(1))
    except ValueError:  # "wait=1.2.3"
        return default, False
    return min(value, MAX_WAIT_S), True


def idempotency_key(request: web.Request, body: Any) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key``, bound to its method, path and (decoded) body."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise invalid("Idempotency-Key", "must be 1 to 255 printable characters")
    return IdempotencyKey.of(f"{request.method} {request.path}", key, body)


def replay_headers(replayed: bool, prefer: bool, waited: float) -> dict[str, str]:
    headers = {}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if prefer:
        headers["Preference-Applied"] = f"wait={waited:g}"
    return headers
