"""Spec section 4: engines (types, create, list, read, execute, delete)."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import (
    idempotency_key,
    json_response,
    limit_offset,
    path_id,
    query_choice,
    read_json,
    replay_headers,
    wait_seconds,
)
from llmgine_daemon.protocol import TERMINAL_STATUSES, EngineCreate, EngineExecute, EngineTypeList

routes = web.RouteTableDef()

# "types" is a sibling route, not an engine id: without this, DELETE /api/engines/types would
# reach delete_engine and OPTIONS would advertise DELETE there (Allow must list only GET).
ENGINE = "/api/engines/{engine_id:(?!types$)[^{}/]+}"

# execute answers with the finished record unless told otherwise (?wait=0 returns at once).
EXECUTE_DEFAULT_WAIT_S = 60.0


@routes.get("/api/engines/types")
async def engine_types(request: web.Request) -> web.Response:
    return json_response(EngineTypeList(request.app[BUS].engines.describe_types()))


@routes.post("/api/engines")
async def create_engine(request: web.Request) -> web.Response:
    body = await read_json(request, EngineCreate)
    engine = await request.app[BUS].engines.create(
        body.engine_type, body.session_id, body.model_name, body.configuration
    )
    return json_response(engine, status=201)


@routes.get("/api/engines")
async def list_engines(request: web.Request) -> web.Response:
    limit, offset = limit_offset(request)
    session_id = request.query.get("session_id") or None
    # "active" is the spec's filter: every engine that is not stopped.
    status = query_choice(request, "status", ("active", "initialized", "stopped"))
    return json_response(await request.app[BUS].engines.list(session_id, status, limit, offset))


@routes.get(ENGINE)
async def get_engine(request: web.Request) -> web.Response:
    return json_response(await request.app[BUS].engines.get(path_id(request, "engine_id")))


@routes.delete(ENGINE)
async def delete_engine(request: web.Request) -> web.Response:
    return json_response(await request.app[BUS].engines.delete(path_id(request, "engine_id")))


@routes.post("/api/engines/{engine_id}/execute")
async def execute(request: web.Request) -> web.Response:
    engine_id = path_id(request, "engine_id")
    wait, prefer = wait_seconds(request, default=EXECUTE_DEFAULT_WAIT_S)
    body = await read_json(request, EngineExecute)
    bus = request.app[BUS]
    record, replayed = await bus.engines.execute(
        engine_id, body.prompt, body.parameters, body.metadata, idempotency_key(request, body)
    )
    done = await bus.commands.wait([record], wait) if wait else record.status in TERMINAL_STATUSES
    return json_response(record, status=200 if done else 202, headers=replay_headers(replayed, prefer, wait))
