"""Where a session token's streamable-HTTP MCP servers may be: ``mcp.session_token_allowed_hosts``
(none by default), not ``mcp.allowed_hosts`` (loopback by default, for API keys and the socket
owner). With loopback open to them, a session token (a browser page's) could register any MCP
server listening on the daemon's loopback - the owner's own, an IDE's, started with no
authentication because only local programs reach it - and call its tools with the results
read back: the daemon was its bridge to local services."""

from __future__ import annotations

from typing import Any

from tests.api.test_mcp_servers import add_server, http_server  # noqa: F401 - the fixture
from tests.conftest import assert_envelope, create_session


async def token_session(client: Any) -> tuple[str, dict[str, str]]:
    session = await create_session(client)
    return session["session_id"], {"X-Session-Token": session["session_token"]}


async def test_a_session_token_reaches_no_local_mcp_server_by_default(make_client: Any, http_server: str) -> None:  # noqa: F811
    client = await make_client()
    sid, token = await token_session(client)
    admin = {"Authorization": client.session.headers.pop("Authorization")}
    error = assert_envelope(
        await add_server(client, sid, expect=403, headers=token, name="local", url=http_server), "FORBIDDEN"
    )
    assert error["details"]["setting"] == "mcp.session_token_allowed_hosts", error
    assert "mcp.session_token_allowed_hosts" in error["message"]
    # An API key may (mcp.allowed_hosts: loopback), in that session too; the token may call
    # the tools the key's registration gives its session.
    server = await add_server(client, sid, headers=admin, name="local", url=http_server)
    assert server["status"] == "running", server
    resp = await client.post(
        f"/api/sessions/{sid}/tools/local.add/execute", json={"arguments": {"a": 2, "b": 3}}, headers=token
    )
    assert resp.status == 200 and (await resp.json())["error"] is None


async def test_the_owner_may_open_hosts_to_session_tokens(make_client: Any, http_server: str) -> None:  # noqa: F811
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_ALLOWED_HOSTS="127.0.0.0/8")
    sid, token = await token_session(client)
    client.session.headers.pop("Authorization")
    server = await add_server(client, sid, headers=token, name="web", url=http_server)
    assert server["status"] == "running", server
    await client.close()
    # Their own list, not mcp.allowed_hosts: a host only that one names stays closed to them.
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_ALLOWED_HOSTS="10.0.0.0/8")
    sid, token = await token_session(client)
    client.session.headers.pop("Authorization")
    error = assert_envelope(
        await add_server(client, sid, expect=403, headers=token, name="web", url=http_server), "FORBIDDEN"
    )
    assert error["details"]["setting"] == "mcp.session_token_allowed_hosts", error
