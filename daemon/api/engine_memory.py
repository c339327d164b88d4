"""An LLM engine's conversation: ``GET /api/engines/{id}/messages``, ``POST .../reset``."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.keys import BUS, LLM
from llmgine_daemon.api.util import json_response, limit_offset, path_id
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.engines.llm import LLM_ENGINES
from llmgine_daemon.protocol import Engine, EngineMessageList, EngineReset

routes = web.RouteTableDef()

WITH_MEMORY = frozenset(cls.engine_type for cls in LLM_ENGINES)


async def _engine(request: web.Request) -> Engine:
    engine = await request.app[BUS].engines.get(path_id(request, "engine_id"))  # 404 ENGINE_NOT_FOUND
    if engine.engine_type not in WITH_MEMORY:
        raise invalid("engine_id", f"{engine.engine_type} keeps no conversation", engine_types=sorted(WITH_MEMORY))
    return engine


@routes.get("/api/engines/{engine_id}/messages")
async def messages(request: web.Request) -> web.Response:
    engine = await _engine(request)
    limit, offset = limit_offset(request, default_limit=100)
    found, total = await request.app[LLM].memory.list(engine.engine_id, limit, offset)
    return json_response(EngineMessageList(engine.engine_id, found, total, limit, offset))


@routes.post("/api/engines/{engine_id}/reset")
async def reset(request: web.Request) -> web.Response:
    engine = await _engine(request)
    deleted = await request.app[LLM].memory.reset(engine.engine_id, engine.session_id)
    return json_response(EngineReset(engine.engine_id, deleted))
