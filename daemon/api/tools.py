"""Spec section 5: tools, registered per session and run in the sandbox."""

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
from llmgine_daemon.bus.mcp_servers import provider_tool_name
from llmgine_daemon.protocol import ToolCreate, ToolExecute, ToolList

routes = web.RouteTableDef()


@routes.post("/api/sessions/{session_id}/tools")
@registers_code
async def register_tool(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    replace = query_bool(request, "replace")
    body = await read_json(request, ToolCreate)
    tool = await request.app[BUS].tools.register(
        session_id,
        body.name,
        body.function_code,
        body.description,
        body.parameters,
        body.timeout,
        replace=replace,
        requires_approval=body.requires_approval,
    )
    return json_response(tool, status=201)


@routes.get("/api/sessions/{session_id}/tools")
async def list_tools(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    fmt = query_choice(request, "format", ("llmgine", "openai"))
    tools = await request.app[BUS].tools.list(session_id)
    listing = paged(request, ToolList(tools=tools, total=len(tools)), "tools")
    if fmt == "openai":
        return json_response(
            [
                {
                    "type": "function",
                    "function": {
                        "name": provider_tool_name(t.name),
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in listing.tools
            ]
        )
    return json_response(listing)


@routes.get("/api/sessions/{session_id}/tools/{name}")
async def get_tool(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    return json_response(await request.app[BUS].tools.get(session_id, path_id(request, "name")))


@routes.delete("/api/sessions/{session_id}/tools/{name}")
async def delete_tool(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    await request.app[BUS].tools.delete(session_id, path_id(request, "name"))
    return web.Response(status=204)


@routes.post("/api/sessions/{session_id}/tools/{name}/execute")
async def execute_tool(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    name = path_id(request, "name")
    body = await read_json(request, ToolExecute, empty_ok=True)
    result = await request.app[BUS].tools.execute(session_id, name, body.arguments, timeout=body.timeout)
    return json_response(result)
