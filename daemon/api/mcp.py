"""MCP tool servers, per session or global (bus/mcp_servers.py).

The same routes exist under ``/api/sessions/{id}/mcp-servers`` (the session's servers; a
session token reaches these) and ``/api/mcp-servers`` (global: every session sees their
tools; API keys and the socket owner only), as for handlers (api/handlers.py).

    POST   .../mcp-servers               McpServerCreate -> 201 McpServer
    GET    .../mcp-servers               -> McpServerList
    GET    .../mcp-servers/{name}        -> McpServer
    DELETE .../mcp-servers/{name}        -> 204 (the server is stopped)
    GET    .../mcp-servers/{name}/tools  -> ToolList (its tools, named NAME.tool)

What a session token may register is the bus's rule (``McpServers.check``).
"""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import json_response, paged, path_id, query_bool, read_json
from llmgine_daemon.protocol import McpServerCreate, McpServerList, ToolList

routes = web.RouteTableDef()

SESSION = "/api/sessions/{session_id}/mcp-servers"
GLOBAL = "/api/mcp-servers"


def _scope(request: web.Request) -> str | None:
    return path_id(request, "session_id") if "session_id" in request.match_info else None


async def register_server(request: web.Request) -> web.Response:
    body = await read_json(request, McpServerCreate)
    principal = request.get(PRINCIPAL)
    by_token = principal is not None and principal.session_id is not None
    replace = query_bool(request, "replace")
    server = await request.app[BUS].mcp.register(_scope(request), body, by_session_token=by_token, replace=replace)
    return json_response(server, status=201)


async def list_servers(request: web.Request) -> web.Response:
    servers = await request.app[BUS].mcp.list(_scope(request))
    return json_response(paged(request, McpServerList(servers=servers, total=len(servers)), "servers"))


async def get_server(request: web.Request) -> web.Response:
    return json_response(await request.app[BUS].mcp.get(_scope(request), path_id(request, "name")))


async def delete_server(request: web.Request) -> web.Response:
    await request.app[BUS].mcp.delete(_scope(request), path_id(request, "name"))
    return web.Response(status=204)


async def list_server_tools(request: web.Request) -> web.Response:
    tools = await request.app[BUS].mcp.server_tools(_scope(request), path_id(request, "name"))
    return json_response(paged(request, ToolList(tools=tools, total=len(tools)), "tools"))


for prefix in (SESSION, GLOBAL):
    routes.post(prefix)(register_server)
    routes.get(prefix)(list_servers)
    routes.get(f"{prefix}/{{name}}")(get_server)
    routes.delete(f"{prefix}/{{name}}")(delete_server)
    routes.get(f"{prefix}/{{name}}/tools")(list_server_tools)
