"""Spec section 3: publish, list (offset or ``after`` cursor; type, prefix, time and source
filters) and read events."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import (
    idempotency_key,
    json_response,
    limit_offset,
    page_response,
    path_id,
    query_choice,
    query_int,
    read_json,
    replay_headers,
)
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.bus.events import PUBLISHER_SOURCES, EventFilter, check_type_pattern
from llmgine_daemon.bus.idempotency import IdempotencyKey
from llmgine_daemon.protocol import EVENT_SOURCES, Event, EventCreate, parse_iso, to_iso

routes = web.RouteTableDef()


def _time(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return to_iso(parse_iso(raw))
    except ValueError:
        raise invalid(name, "must be an ISO 8601 time, e.g. 2024-01-01T00:00:00Z", value=raw[:64]) from None


@routes.post("/api/sessions/{session_id}/events")
async def publish_event(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    body = await read_json(request, EventCreate)
    event, replayed = await publish(request.app[BUS], session_id, body, idempotency_key(request, body))
    return json_response(event, status=201, headers=replay_headers(replayed, False, 0))


async def publish(bus: Bus, session_id: str, body: EventCreate, idem: IdempotencyKey | None) -> tuple[Event, bool]:
    """The route's work once the request is read (the fast lane's too: api/fastlane.py)."""
    # The spec's example sends metadata.source; honour it for the sources a publisher may
    # claim ("bus" is the daemon's own), otherwise the event's source is "api".
    claimed = body.metadata.get("source")
    source = claimed if claimed in PUBLISHER_SOURCES else "api"
    return await bus.events.publish(session_id, body.event_type, body.data, body.metadata, source=source, idem=idem)


@routes.get("/api/sessions/{session_id}/events")
async def list_events(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request, "session_id")
    limit, offset = limit_offset(request)
    # Empty is no filter, as for every query parameter here (the fuzzer holds the API to it).
    event_type = request.query.get("event_type") or None
    if event_type:
        check_type_pattern(event_type)
    flt = EventFilter(
        event_type=event_type,
        after=query_int(request, "after", -1, minimum=0) if request.query.get("after") else None,
        since=_time(request, "since"),
        until=_time(request, "until"),
        source=query_choice(request, "source", EVENT_SOURCES),
    )
    return await page_response(request, await request.app[BUS].events.list(session_id, flt, limit, offset))


@routes.get("/api/sessions/{session_id}/events/{event_id:(?!stream$)[^{}/]+}")
async def get_event(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    event_id = path_id(request, "event_id")
    return json_response(await request.app[BUS].events.get(session_id, event_id))
