"""Spec section 6: user-code command and event handlers, per session or global.

The same routes exist under ``/api/sessions/{id}/handlers`` (session scope) and
``/api/handlers`` (global scope, seen by every session; a session's command handler wins).
"""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import (
    json_response,
    paged,
    path_id,
    query_bool,
    query_choice,
    read_json,
    registers_code,
)
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.bus.usercode_handlers import TYPE_RULE, valid_handler_type
from llmgine_daemon.protocol import CommandHandlerCreate, EventHandlerCreate, HandlerList

routes = web.RouteTableDef()

SESSION = "/api/sessions/{session_id}/handlers"
GLOBAL = "/api/handlers"


def _scope(request: web.Request) -> str | None:
    return path_id(request, "session_id") if "session_id" in request.match_info else None


def _type(request: web.Request) -> str:
    """The type in the path: anything a registration accepts ("*", dots, an encoded "/"), so
    every handler that can be registered can be deleted. It is only compared with stored
    types, never used as a path or in SQL text."""
    value = request.match_info["type"]
    if not valid_handler_type(value):
        raise invalid("type", TYPE_RULE, value=value[:64])
    return value


@registers_code
async def register_command(request: web.Request) -> web.Response:
    body = await read_json(request, CommandHandlerCreate)
    handler = await request.app[BUS].user_handlers.register(
        _scope(request),
        "command",
        body.command_type,
        body.handler_function,
        timeout=body.timeout,
        replace=query_bool(request, "replace"),
    )
    return json_response(handler, status=201)


@registers_code
async def register_event(request: web.Request) -> web.Response:
    body = await read_json(request, EventHandlerCreate)
    handler = await request.app[BUS].user_handlers.register(
        _scope(request),
        "event",
        body.event_type,
        body.handler_function,
        priority=body.priority,
        timeout=body.timeout,
        replace=query_bool(request, "replace"),
    )
    return json_response(handler, status=201)


async def list_handlers(request: web.Request) -> web.Response:
    kind = query_choice(request, "kind", ("command", "event"))
    handlers = await request.app[BUS].user_handlers.list(_scope(request), kind)
    return json_response(paged(request, HandlerList(handlers=handlers, total=len(handlers)), "handlers"))


async def get_handler(request: web.Request) -> web.Response:
    handler_id = path_id(request, "handler_id")
    return json_response(await request.app[BUS].user_handlers.get(_scope(request), handler_id))


async def delete_command(request: web.Request) -> web.Response:
    await request.app[BUS].user_handlers.delete(_scope(request), "command", _type(request))
    return web.Response(status=204)


async def delete_event(request: web.Request) -> web.Response:
    await request.app[BUS].user_handlers.delete(_scope(request), "event", _type(request))
    return web.Response(status=204)


for prefix in (SESSION, GLOBAL):
    routes.post(f"{prefix}/commands")(register_command)
    routes.post(f"{prefix}/events")(register_event)
    routes.get(prefix)(list_handlers)
    # "commands"/"events" are the registration routes (POST), not handler ids.
    routes.get(f"{prefix}/{{handler_id:(?!commands$|events$)[^{{}}/]+}}")(get_handler)
    routes.delete(f"{prefix}/commands/{{type}}")(delete_command)
    routes.delete(f"{prefix}/events/{{type}}")(delete_event)
