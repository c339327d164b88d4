"""An MCP server's URL may be any service of ``mcp.allowed_hosts`` (loopback by default), and
a session token may register one in its session where ``mcp.session_token_allowed_hosts``
lists the host: what the daemon reports of a URL that is not an MCP server (``last_error``, a
failed call) must not quote that service's answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.api.test_mcp_servers import add_server
from tests.conftest import create_session

SECRET = "internal-" + "s3cr3t" * 10


async def test_a_session_token_reads_nothing_of_a_local_service_through_last_error(
    make_client: Any, aiohttp_server: Any
) -> None:
    """The client's parse error quoted the start and end of the answer (pydantic's
    ``input_value=b'...'``): a session token registering ``http://127.0.0.1:PORT/...`` read
    the first and last 24 characters of any local HTTP service's JSON or event-stream
    answer."""

    async def private(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=f"{SECRET}\n" * 4, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", private)
    service = await aiohttp_server(app)
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_ALLOWED_HOSTS="127.0.0.0/8")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    server = await add_server(client, sid, headers=token, name="web", url=str(service.make_url("/admin")))
    assert server["status"] == "failed", server
    assert server["last_error"] and "internal-" not in server["last_error"], server
    assert "s3cr3t" not in server["last_error"] and "\n" not in server["last_error"], server
