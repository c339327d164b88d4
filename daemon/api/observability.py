"""Spec section 7: logs, metrics and traces; plus the steps of the HTTP edge that feed them.

The edge (api/edge.py) calls ``begin_request`` first and ``end_request`` last for every
request: the request span continues the client's W3C ``traceparent`` (or starts a trace), the
session id from the path is bound so everything below logs with it, and the request is counted
by route template (never the raw path: ids would make every request its own series).
``stamp_traceparent`` puts the span's ``traceparent`` on every response, WebSocket handshakes
included, before it is sent.

Telemetry about telemetry is left out of the trace store: GETs of the observability routes,
``/metrics`` and ``/api/health`` (pollers such as ``llmgine logs -f`` would otherwise fill it);
they are still counted in metrics and still get a ``traceparent``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from contextvars import Token

from aiohttp import web
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.api.keys import BUS, OBSERVABILITY
from llmgine_daemon.api.util import json_response, path_id, query_choice, query_int, read_json
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.observability.context import CURRENT_SPAN, FIELDS, set_fields
from llmgine_daemon.observability.core import Observability
from llmgine_daemon.observability.logs import LEVELS, query_logs, scrub_metadata, scrub_text
from llmgine_daemon.observability.metrics_view import prometheus_text, session_snapshot, snapshot
from llmgine_daemon.observability.trace_store import list_traces, read_trace
from llmgine_daemon.observability.tracing import TRACE_ID, TRACEPARENT, Span, parse_traceparent
from llmgine_daemon.protocol import ErrorCode, LogCreate, LogList, LogRecord, now_iso, parse_iso, to_iso
from llmgine_daemon.protocol.system import log_level
from llmgine_daemon.textsafe import without_nul

routes = web.RouteTableDef()
client_log = logging.getLogger("llmgine.client")

SPAN = web.RequestKey("span", Span)
UNTRACED_PREFIXES = ("/api/observability/", "/metrics", "/api/health")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


class Observed:
    """One request's telemetry while it runs: begun by ``begin_request``, ended by
    ``end_request`` with the status the client got."""

    __slots__ = ("obs", "span", "route", "method", "fields_token", "span_token", "started")

    def __init__(
        self, obs: Observability, span: Span, route: str, method: str, fields_token: Token[dict[str, str]]
    ) -> None:
        self.obs = obs
        self.span = span
        self.route = route
        self.method = method
        self.fields_token = fields_token
        self.span_token = CURRENT_SPAN.set(span)
        self.started = time.perf_counter()


def begin_request(request: web.Request, request_id: str, obs: Observability) -> Observed:
    """Continue the client's ``traceparent`` (or start a trace) with the request span, and bind
    the path's session id and the request id so everything below logs with them. ``obs`` is
    the app's (request.app[OBSERVABILITY])."""
    method = request.method
    observed = begin(
        obs,
        method,
        route_label(request),
        request.match_info.get("session_id"),
        request.headers.get(TRACEPARENT),
        request_id,
        record=not (method == "GET" and request.path.startswith(UNTRACED_PREFIXES)),
    )
    request[SPAN] = observed.span
    return observed


def begin(
    obs: Observability,
    method: str,
    route: str,
    session_id: str | None,
    traceparent: str | None,
    request_id: str,
    record: bool = True,
) -> Observed:
    """``begin_request`` without the request (the fast lane's, api/fastlane.py)."""
    span = obs.tracer.start_with(
        f"{method} {route}",
        {"http.method": method, "http.route": route, "session_id": session_id},
        parent=parse_traceparent(traceparent),
        kind="server",
        record=record,
    )
    return Observed(obs, span, route, method, set_fields(session_id=session_id, request_id=request_id))


def end_request(observed: Observed, status: int) -> None:
    """Restore the context, count and time the request by route template, end its span."""
    elapsed = time.perf_counter() - observed.started
    CURRENT_SPAN.reset(observed.span_token)
    FIELDS.reset(observed.fields_token)
    obs = observed.obs
    if obs.metrics_enabled:
        requests, duration = obs.http_metrics(observed.route, observed.method, status)
        requests.inc()
        duration.observe(elapsed)
    span = observed.span
    span.attributes["http.status_code"] = status
    if status >= 500:
        span.fail(f"HTTP {status}")
    span.end()


def stamp_traceparent(request: web.Request, response: web.StreamResponse) -> None:
    """The request span's ``traceparent`` on its response, WebSocket handshakes included."""
    span = request.get(SPAN)
    if span is not None:
        response.headers[TRACEPARENT] = span.traceparent


# -- query parsing -----------------------------------------------------------------------------


def query_time(request: web.Request, name: str) -> str | None:
    """An ISO 8601 time, or a relative one ("90s", "15m", "1h", "2d", "1w" ago); as ISO UTC."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    match = _RELATIVE.match(raw.lower())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        try:
            return to_iso(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
        except OverflowError:  # "99999999999w" ago is before year 1: since the beginning
            return to_iso(dt.datetime.min.replace(tzinfo=dt.UTC))
    try:
        return to_iso(parse_iso(raw))
    except ValueError:
        raise invalid(name, "must be an ISO 8601 time or a duration like 15m, 1h, 2d", value=raw[:64]) from None


def query_id(request: web.Request, name: str) -> str | None:
    """A ``*_id`` query parameter: the guard checked it (api/limits.py check_identifiers)."""
    return request.query.get(name) or None


def query_level(request: web.Request) -> str | None:
    raw = request.query.get("level", "").strip()
    return _level(raw) if raw else None


def _level(raw: str) -> str:
    """A level a client gave (any case, `warn`, `fatal`) as the store's name for it."""
    level = log_level(raw)
    if level is None:
        raise invalid("level", f"must be one of {', '.join(LEVELS)} (any case)", value=raw[:64])
    return level


# -- logs --------------------------------------------------------------------------------------


@routes.get("/api/observability/logs")
async def get_logs(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    after_raw = request.query.get("after")
    after = query_int(request, "after", 0, minimum=0) if after_raw not in (None, "") else None
    filters = dict(
        level=query_level(request),
        session_id=query_id(request, "session_id"),
        command_id=query_id(request, "command_id"),
        trace_id=query_id(request, "trace_id"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        q=request.query.get("q") or None,
    )
    await obs.flush()
    records = await obs.telemetry.read(lambda c: query_logs(c, after=after, limit=limit, **filters))
    next_after = records[-1].id if records else after
    if next_after is None:
        # Nothing matched yet: a follower starts from the newest record there is.
        row = await obs.telemetry.fetchone("SELECT MAX(id) FROM logs")
        next_after = row[0] if row and row[0] is not None else 0
    return json_response(LogList(logs=records, limit=limit, next_after=next_after))


@routes.post("/api/observability/logs")
async def post_log(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    body = await read_json(request, LogCreate)
    if not body.message:
        raise invalid("message", "must not be empty")
    level = _level(body.level)
    metadata = scrub_metadata(body.metadata)
    if "exception" in metadata:
        # "exception" is the daemon's own traceback, which log renderers print as it is, lines
        # and all: a client's is kept under another name, rendered escaped like the rest.
        metadata["client_exception"] = metadata.pop("exception")
    session_id = body.session_id or (
        metadata.get("session_id") if isinstance(metadata.get("session_id"), str) else None
    )
    span = request[SPAN]
    record = LogRecord(
        id=0,
        timestamp=now_iso(),
        level=level,
        # A NUL as the store keeps it (logs.insert_logs), so the answer is the stored record.
        logger=without_nul((body.logger or "client")[:128]),
        message=without_nul(scrub_text(body.message)[:16_384]),
        source="client",
        session_id=session_id,
        request_id=FIELDS.get().get("request_id"),
        trace_id=span.trace_id,
        span_id=span.span_id,
        metadata=metadata,
    )
    record.id = await obs.store_log(record)
    # Also to the log file / stderr; lg_stored keeps the store handler from saving it twice.
    client_log.log(
        LEVELS[level],
        "%s",
        record.message,
        extra={"lg_stored": True, "source": "client", "metadata": metadata, "session_id": session_id},
    )
    return json_response(record, status=201)


# -- metrics -----------------------------------------------------------------------------------


@routes.get("/api/observability/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    bus = request.app[BUS]
    session_id = query_id(request, "session_id")
    if session_id:
        await bus.sessions.get(session_id)  # SESSION_NOT_FOUND for an unknown one
        return json_response(await session_snapshot(obs, session_id, bus.uptime))
    return json_response(snapshot(obs.registry, bus.uptime))


@routes.get("/metrics")
async def prometheus(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    if not obs.registry.enabled:
        raise ApiError(
            ErrorCode.NOT_FOUND, "metrics are disabled (observability.enable_metrics / ENABLE_METRICS is false)"
        )
    body, content_type = prometheus_text(obs.registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# -- traces ------------------------------------------------------------------------------------


@routes.get("/api/observability/traces")
async def get_traces(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    session_id = query_id(request, "session_id")
    since = query_time(request, "since")
    status = query_choice(request, "status", ("ok", "error"))
    limit = query_int(request, "limit", 50, minimum=1, maximum=1000)
    since_unix = parse_iso(since).timestamp() if since else None
    await obs.flush()
    result = await obs.telemetry.read(
        lambda c: list_traces(c, session_id=session_id, since_unix=since_unix, status=status, limit=limit)
    )
    return json_response(result)


@routes.get("/api/observability/traces/{trace_id}")
async def get_trace(request: web.Request) -> web.Response:
    obs = request.app[OBSERVABILITY]
    trace_id = path_id(request, "trace_id").lower()
    if not TRACE_ID.match(trace_id):
        raise invalid("trace_id", "must be 32 hexadecimal digits", value=trace_id[:64])
    await obs.flush()
    view = await obs.telemetry.read(lambda c: read_trace(c, trace_id))
    if view is None:
        unsampled = obs.not_sampled_message(trace_id)
        if unsampled is not None:
            raise ApiError(
                ErrorCode.NOT_FOUND,
                unsampled,
                {"trace_id": trace_id, "sampled": False, "sample_rate": obs.sample_rate},
            )
        detail = "" if obs.tracing_enabled else " (tracing is disabled: ENABLE_TRACING is false)"
        raise ApiError(ErrorCode.NOT_FOUND, f"trace {trace_id!r} not found{detail}", {"trace_id": trace_id})
    return json_response(view)
