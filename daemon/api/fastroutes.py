"""The routes the fast lane serves (api/fastlane.py): what each checks before it takes a
request (nothing a route may refuse is left to find after the request is taken, except what the
bus itself refuses), and its work, the route handler's own (``api/events.publish``,
``api/commands.run_command``).

- ``POST /api/sessions/{session_id}/events``: an ``EventCreate`` body; 201 with the event.
- ``POST /api/sessions/{session_id}/commands`` with no query or ``?wait=N`` alone: a
  ``CommandCreate`` body that ``validate`` passes; 200 with the finished record, 202 while it is
  queued or running.

Each ``prepare`` returns None for a request aiohttp's path must answer (it then answers the
refusal), else what ``run`` needs.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from llmgine_daemon.api.commands import run_command
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.api.events import publish
from llmgine_daemon.api.util import MAX_WAIT_S, decode_body
from llmgine_daemon.bus.auth import Principal
from llmgine_daemon.bus.commands import validate
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import CommandCreate, EventCreate

# (status, the value to encode as the body, headers beyond the usual)
Outcome = tuple[int, Any, dict[str, str]]


def _decode(body: bytes, model: type[Any]) -> Any:
    """``body`` as ``model``, as ``read_json`` reads it (api/util.py), or None (aiohttp's path
    then says what is wrong with it)."""
    if not body:
        return None
    try:
        return decode_body(body, model)
    except (BusError, ApiError):
        return None


class Route:
    """One route: its template (the metric's and the span's label) and its two steps."""

    template = ""

    def prepare(self, body: bytes, wait: bytes | None, principal: Principal) -> Any:
        raise NotImplementedError

    def run(self, bus: Bus, session_id: str, prepared: Any) -> Awaitable[Outcome]:
        raise NotImplementedError


class PublishEvent(Route):
    template = "/api/sessions/{session_id}/events"

    def prepare(self, body: bytes, wait: bytes | None, principal: Principal) -> Any:
        return _decode(body, EventCreate) if wait is None else None

    async def run(self, bus: Bus, session_id: str, prepared: Any) -> Outcome:
        event, replayed = await publish(bus, session_id, prepared, None)
        return 201, event, {}


class SubmitCommand(Route):
    template = "/api/sessions/{session_id}/commands"

    def prepare(self, body: bytes, wait: bytes | None, principal: Principal) -> Any:
        decoded = _decode(body, CommandCreate)
        if decoded is None:
            return None
        seconds = float(wait) if wait is not None else 0.0
        if not 0 <= seconds <= MAX_WAIT_S:
            return None
        try:
            spec = validate(decoded)
        except BusError:
            return None
        spec.after_scope = principal.session_id  # a session token names its own session's commands only
        return spec, seconds

    async def run(self, bus: Bus, session_id: str, prepared: Any) -> Outcome:
        spec, wait = prepared
        record, _, done = await run_command(bus.commands, session_id, spec, None, wait)
        return (200 if done else 202), record, {}


ROUTES: dict[bytes, Route] = {b"events": PublishEvent(), b"commands": SubmitCommand()}
