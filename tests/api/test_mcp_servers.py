"""MCP tool servers through the API, against real servers built with the official SDK
(tests/fakes/mcp_server.py): a stdio one the daemon starts (sandboxed, and trusted) and a
streamable-HTTP one. Tool calls from `tools/{name}/execute` and from a ToolChatEngine on the
fake provider, a crash and the restart, removal, persistence over a restart, session tokens'
limits, and secrets kept out of bodies and logs."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.mcp.connection import Connection, ServerConfig

from tests.api.bus_helpers import cluster_node
from tests.api.llm_helpers import MODELS, create_llm_engine, engine_events, execute
from tests.clitools import free_port
from tests.conftest import assert_envelope, create_session
from tests.eventually import eventually
from tests.fakes.provider import FakeProvider, Reply

SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_server.py")
STDIO = {"command": sys.executable, "args": [SERVER]}


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """The fake MCP server over streamable HTTP, as a process; yields its URL."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SERVER,
        "--http",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    def listening() -> bool:
        # An HTTP answer, not a TCP connect: while nothing listens yet, a connect to a port in
        # the ephemeral range can succeed by connecting to itself (TCP simultaneous open), and the
        # daemon's first attempt then met no server (the add answered "failed"; seen in CI).
        if proc.returncode is not None:  # (its port taken meanwhile: another process's answer is not its)
            raise RuntimeError(f"the fake MCP server exited ({proc.returncode}) before it answered")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/mcp")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    try:
        await eventually(listening, timeout=30)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        await proc.wait()


async def add_server(client: Any, sid: str | None, expect: int = 201, headers: Any = None, **body: Any) -> Any:
    path = f"/api/sessions/{sid}/mcp-servers" if sid else "/api/mcp-servers"
    resp = await client.post(path, json=body, headers=headers or {})
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def execute_tool(client: Any, sid: str, name: str, **arguments: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": arguments})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


@pytest.mark.parametrize("trusted", [False, True], ids=["sandboxed", "trusted"])
async def test_stdio_server_tools_are_the_sessions_tools(app_client: Any, home: Path, trusted: bool) -> None:
    sid = (await create_session(app_client))["session_id"]
    probe = free_port()
    listener = socket.create_server(("127.0.0.1", probe))
    try:
        server = await add_server(
            app_client,
            sid,
            name="fake",
            trusted=trusted,
            env={"PROBE_PATH": str(home), "PROBE_PORT": str(probe)},
            **STDIO,
        )
        assert server["status"] == "running", (server["status"], server["last_error"])
        assert server["transport"] == "stdio" and server["scope"] == "session"
        assert {"fake.add", "fake.whoami", "fake.crash", "fake.fail"} <= set(server["tools"])

        tools = (await (await app_client.get(f"/api/sessions/{sid}/tools")).json())["tools"]
        add = next(t for t in tools if t["name"] == "fake.add")
        assert add["server"] == "fake" and add["description"] == "Add two integers."
        assert add["parameters"]["required"] == ["a", "b"]
        one = await (await app_client.get(f"/api/sessions/{sid}/tools/fake.add")).json()
        assert one["name"] == "fake.add"
        openai = await (await app_client.get(f"/api/sessions/{sid}/tools", params={"format": "openai"})).json()
        assert "fake-add" in [t["function"]["name"] for t in openai]  # a name providers accept

        result = await execute_tool(app_client, sid, "fake.add", a=2, b=40)
        assert result["error"] is None and result["result"] == {"result": 42}
        view = (await execute_tool(app_client, sid, "fake.whoami"))["result"]
        # Sandboxed: none of LLMGINE_HOME, no network; trusted: the host's view.
        assert view["path_visible"] is trusted and view["reaches_port"] is trusted
        if not trusted:  # the sandbox workers' seccomp filter (sandbox/seccomp.py) holds too
            assert view["seccomp"] == "2" and view["vsock"] == "EPERM", view
        failed = await execute_tool(app_client, sid, "fake.fail", message="nope")
        assert failed["error"]["code"] == "EXECUTION_FAILED" and "nope" in failed["error"]["message"]
    finally:
        listener.close()

    # The same ToolExecuted event and tool.call span as a registered tool.
    events = (await (await app_client.get(f"/api/sessions/{sid}/events")).json())["events"]
    executed = [e["data"] for e in events if e["event_type"] == "ToolExecuted"]
    assert executed[0]["tool_name"] == "fake.add" and executed[0]["result"] == {"result": 42}
    traces = (await (await app_client.get("/api/observability/traces", params={"session_id": sid})).json())["traces"]
    assert traces
    exposition = await (await app_client.get("/metrics")).text()
    counted = [line for line in exposition.splitlines() if line.startswith("llmgine_mcp_tool_calls_total{")]
    assert any('server="fake"' in line and 'outcome="ok"' in line for line in counted), counted


async def test_a_crashed_server_is_restarted(app_client: Any) -> None:
    sid = (await create_session(app_client))["session_id"]
    server = await add_server(app_client, sid, name="fake", **STDIO)
    first_pid = server["pid"]
    crashed = await execute_tool(app_client, sid, "fake.crash")
    assert crashed["error"]["code"] == "SERVER_UNAVAILABLE", crashed

    async def restarted() -> Any:
        got = await (await app_client.get(f"/api/sessions/{sid}/mcp-servers/fake")).json()
        return got if got["restarts"] >= 1 and got["status"] == "running" else None

    server = await eventually(restarted, timeout=30)
    assert server["pid"] != first_pid and not alive(first_pid)
    # A call waits for a server that is restarting; this one is back.
    assert (await execute_tool(app_client, sid, "fake.add", a=1, b=1))["result"] == {"result": 2}


async def test_removal_stops_the_server_and_its_tools_go(app_client: Any) -> None:
    sid = (await create_session(app_client))["session_id"]
    server = await add_server(app_client, sid, name="fake", **STDIO)
    assert alive(server["pid"])
    resp = await app_client.delete(f"/api/sessions/{sid}/mcp-servers/fake")
    assert resp.status == 204
    assert not alive(server["pid"])
    names = [t["name"] for t in (await (await app_client.get(f"/api/sessions/{sid}/tools")).json())["tools"]]
    assert not any(n.startswith("fake.") for n in names)
    resp = await app_client.post(f"/api/sessions/{sid}/tools/fake.add/execute", json={"arguments": {"a": 1, "b": 2}})
    assert_envelope(await resp.json(), "TOOL_NOT_FOUND")
    resp = await app_client.get(f"/api/sessions/{sid}/mcp-servers/fake")
    assert resp.status == 404
    assert_envelope(await resp.json(), "NOT_FOUND")

    # Ending a session stops its servers.
    server = await add_server(app_client, sid, name="again", **STDIO)
    assert (await app_client.delete(f"/api/sessions/{sid}")).status == 200
    assert not alive(server["pid"])


async def test_replace_stops_the_old_server_and_starts_the_new(app_client: Any) -> None:
    # ?replace=true (`mcp add --replace`, as tools'): a setup script run again got 409 and had
    # to remove the server first. The old process is stopped, the new one's tools answer.
    sid = (await create_session(app_client))["session_id"]
    first = await add_server(app_client, sid, name="fake", **STDIO)
    await add_server(app_client, sid, expect=409, name="fake", **STDIO)
    resp = await app_client.post(f"/api/sessions/{sid}/mcp-servers?replace=true", json={"name": "fake", **STDIO})
    assert resp.status == 201, await resp.text()
    second = await resp.json()
    assert second["pid"] != first["pid"] and alive(second["pid"]) and not alive(first["pid"])
    assert (await execute_tool(app_client, sid, "fake.add", a=1, b=2))["result"] == {"result": 3}
    listed = (await (await app_client.get(f"/api/sessions/{sid}/mcp-servers")).json())["servers"]
    assert [s["name"] for s in listed] == ["fake"]


async def test_concurrent_replaces_and_removals_leave_one_server_running_or_none(app_client: Any) -> None:
    """Replaces of one server sent at once (and a removal among them): the store keeps one
    registration or none, and exactly that one process runs. A replace stopped the old process
    between taking it out of memory and putting its own in, so another replace meanwhile put
    its own in first and was then overwritten: its process ran on, untracked, for good."""
    sid = (await create_session(app_client))["session_id"]
    path = f"/api/sessions/{sid}/mcp-servers"
    for removal in (False, True):
        first = await add_server(app_client, sid, name="fake", **STDIO)
        replaces = [app_client.post(f"{path}?replace=true", json={"name": "fake", **STDIO}) for _ in range(4)]
        if removal:
            replaces.insert(2, app_client.delete(f"{path}/fake"))
        answers = await asyncio.gather(*replaces)
        assert all(r.status in (201, 204) for r in answers), [r.status for r in answers]
        # (An answer's server may have been replaced already by the time it is written: no pid.)
        pids = [first["pid"]] + [(await r.json())["pid"] for r in answers if r.status == 201]
        pids = [p for p in pids if p is not None]
        listed = (await (await app_client.get(path)).json())["servers"]
        running = {s["pid"] for s in listed}
        assert len(listed) <= 1 and (listed or removal), listed
        leaked = [p for p in pids if p not in running]
        await eventually(lambda leaked=leaked: not any(alive(p) for p in leaked), message="no leaked process")
        if listed:
            assert alive(listed[0]["pid"])
            assert (await execute_tool(app_client, sid, "fake.add", a=1, b=2))["result"] == {"result": 3}
            assert (await app_client.delete(f"{path}/fake")).status == 204


async def test_http_server_global_and_persisted(make_client: Any, http_server: str) -> None:
    client = await make_client()
    server = await add_server(client, None, name="web", url=http_server)
    assert server["status"] == "running" and server["scope"] == "global" and server["transport"] == "http"
    listed = await (await client.get("/api/mcp-servers/web/tools")).json()
    assert "web.add" in [t["name"] for t in listed["tools"]]
    sid = (await create_session(client))["session_id"]
    # Every session sees a global server's tools.
    assert (await execute_tool(client, sid, "web.add", a=3, b=4))["result"] == {"result": 7}
    conflict = await add_server(client, None, expect=409, name="web", url=http_server)
    assert_envelope(conflict, "CONFLICT")
    await client.close()

    # A restarted daemon brings the registration back.
    client = await make_client()
    servers = (await (await client.get("/api/mcp-servers")).json())["servers"]
    assert [s["name"] for s in servers] == ["web"]
    assert (await execute_tool(client, sid, "web.add", a=5, b=5))["result"] == {"result": 10}
    assert (await client.delete("/api/mcp-servers/web")).status == 204
    assert (await (await client.get("/api/mcp-servers")).json())["total"] == 0


async def test_a_server_registered_on_one_node_runs_on_every_node_until_removed(
    pg_url: str, aiohttp_client: Any, tmp_path: Path, http_server: str
) -> None:
    """Two nodes on one PostgreSQL database. A registration lived in the memory of the node
    that made it: another node did not list it, could not call its tools (a ToolChat command
    running there was not offered them) and kept a removed one running until it restarted."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name) for name in "ab"]
    sid = (await create_session(a))["session_id"]
    await add_server(a, None, name="web", url=http_server)
    await add_server(a, sid, name="own", url=http_server)

    async def names(client: Any, path: str) -> list[str]:
        return [s["name"] for s in (await (await client.get(path)).json())["servers"]]

    # Two registrations, two writes: b may have heard of the first before the second.
    async def both() -> bool:
        return await names(b, "/api/mcp-servers") != [] and await names(b, f"/api/sessions/{sid}/mcp-servers") == [
            "own"
        ]

    await eventually(both, message="both servers listed on b")
    assert (await execute_tool(b, sid, "web.add", a=3, b=4))["result"] == {"result": 7}
    assert (await execute_tool(b, sid, "own.add", a=1, b=1))["result"] == {"result": 2}
    assert (await b.delete("/api/mcp-servers/web")).status == 204  # removed on the other node
    await eventually(lambda: a.app[BUS].mcp.servers.get(("", "web")) is None, message="stopped on a")
    assert await names(a, "/api/mcp-servers") == []
    assert (await b.delete(f"/api/sessions/{sid}")).status == 200  # the session's end, too
    await eventually(lambda: a.app[BUS].mcp.servers == {}, message="the session's server stopped on a")


async def test_hosts_outside_the_allowed_list_are_refused(app_client: Any) -> None:
    error = await add_server(app_client, None, expect=403, name="far", url="http://10.1.2.3:8000/mcp")
    assert assert_envelope(error, "FORBIDDEN")["details"]["setting"] == "mcp.allowed_hosts"
    error = await add_server(app_client, None, expect=422, name="both", url="http://127.0.0.1:1/mcp", **STDIO)
    assert_envelope(error, "VALIDATION_ERROR")
    error = await add_server(app_client, None, expect=422, name="bad.name", **STDIO)
    assert_envelope(error, "VALIDATION_ERROR")
    error = await add_server(app_client, None, expect=422, name="missing", command="/no/such/program")
    assert "not found" in assert_envelope(error, "VALIDATION_ERROR")["details"]["issue"]
    error = await add_server(app_client, None, expect=422, name="creds", url="http://u:p@127.0.0.1:1/mcp")
    assert_envelope(error, "VALIDATION_ERROR")


async def test_a_names_addresses_are_checked_before_connecting(make_client: Any, http_server: str) -> None:
    """A name may be allowed while the addresses it resolves to are not (DNS rebinding): the
    registration passes, the connection is refused."""
    client = await make_client(LLMGINE_MCP_ALLOWED_HOSTS="localhost")
    server = await add_server(client, None, name="web", url=http_server.replace("127.0.0.1", "localhost"))
    assert server["status"] == "failed" and "resolves to" in server["last_error"], server
    error = await add_server(client, None, expect=403, name="direct", url=http_server)
    assert assert_envelope(error, "FORBIDDEN")["details"]["setting"] == "mcp.allowed_hosts"


async def test_the_connection_goes_to_the_checked_address_only(http_server: str) -> None:
    """The addresses the policy checked are the ones connected to: the HTTP client never
    resolves the name a second time (where DNS could answer with another address). The name
    here resolves nowhere but through the checked answer (a DNS server's answer, faked)."""
    port = int(http_server.rsplit(":", 1)[1].split("/")[0])
    asked: list[tuple[str, int]] = []

    async def dns(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    url = f"http://rebound.invalid:{port}/mcp"
    conn = Connection(ServerConfig(label="pinned", url=url, resolve=dns), isolation=no_isolation)
    conn.start()
    try:
        await conn.wait_settled(30)
        assert conn.status == "running", conn.last_error
        assert (await conn.call("add", {"a": 2, "b": 3}, 10)).result == {"result": 5}
        assert len(asked) >= 2 and set(asked) == {("rebound.invalid", port)}  # the check, then each connection
    finally:
        await conn.stop()


async def no_isolation() -> None:
    return None


async def test_session_tokens_cannot_run_host_commands(make_client: Any, http_server: str) -> None:
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_ALLOWED_HOSTS="127.0.0.0/8")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    # No stdio server, sandboxed or trusted, and nothing global.
    for body in (STDIO, {**STDIO, "trusted": True}, {"command": "/usr/bin/env", "args": []}):
        error = await add_server(client, sid, expect=403, headers=token, name="x", **body)
        assert_envelope(error, "FORBIDDEN")
    error = await add_server(client, None, expect=403, headers=token, name="x", url=http_server)
    assert_envelope(error, "FORBIDDEN")
    # An HTTP server on a host mcp.session_token_allowed_hosts lists, in its own session, is fine.
    server = await add_server(client, sid, headers=token, name="web", url=http_server)
    assert server["status"] == "running"
    await client.close()

    # With mcp.session_token_stdio: sandboxed commands under /usr or /bin only, nothing trusted,
    # no mounts, no secrets.
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    client.session.headers.pop("Authorization")
    for body in (
        {**STDIO, "trusted": True},
        {"command": sys.executable, "args": [SERVER]},
        {"command": "/usr/bin/env", "args": [], "mounts": ["/etc"]},
        {"command": "/usr/bin/env", "args": [], "env": {"K": "secret:OPENAI_API_KEY"}},
    ):
        error = await add_server(client, sid, expect=403, headers=token, name="x", **body)
        assert_envelope(error, "FORBIDDEN")


async def test_secrets_reach_the_server_not_bodies_or_logs(app_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    value = "mcp-" + os.urandom(8).hex()
    resp = await app_client.put("/api/secrets/MCP_TOKEN", json={"value": value})
    assert resp.status == 200, await resp.text()
    sid = (await create_session(app_client))["session_id"]
    caplog.set_level(logging.INFO, logger="llmgine.mcp")
    server = await add_server(app_client, sid, name="fake", env={"TOKEN": "secret:MCP_TOKEN"}, **STDIO)
    assert server["env_keys"] == ["TOKEN"] and value not in str(server)
    assert (await execute_tool(app_client, sid, "fake.whoami"))["result"]["token"] == value
    listed = await (await app_client.get(f"/api/sessions/{sid}/mcp-servers")).text()
    assert value not in listed and "MCP_TOKEN" not in listed
    # The server's stderr reached the log, the secret replaced.
    await eventually(lambda: any("fake mcp server starting" in r.getMessage() for r in caplog.records))
    assert not any(value in r.getMessage() for r in caplog.records)
    error = await add_server(app_client, sid, expect=422, name="other", env={"T": "secret:NO_SUCH"}, **STDIO)
    assert "NO_SUCH" in error["error"]["message"] or "NO_SUCH" in str(error["error"]["details"])


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_toolchat_engine_calls_mcp_tools(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS[kind])
    sid = engine["session_id"]
    await add_server(client, sid, name="fake", **STDIO)
    gated = await add_server(client, sid, name="gated", requires_approval=True, **STDIO)
    assert gated["requires_approval"] is True
    listed = (await (await client.get(f"/api/sessions/{sid}/tools")).json())["tools"]
    assert {t["name"]: t["requires_approval"] for t in listed if t["server"]}["gated.add"] is True
    assert {t["name"]: t["requires_approval"] for t in listed if t["server"]}["fake.add"] is False
    # Providers allow no "." in a function name: the model is offered fake-add.
    fake.script(Reply("Adding.", tool_calls=[("fake-add", {"a": 20, "b": 22})]))
    record = await execute(client, engine["engine_id"], "What is 20 + 22?")
    assert record["status"] == "completed", record
    assert record["result"]["tool_calls"][0]["tool_name"] == "fake.add"
    assert "42" in record["result"]["text"]
    assert "fake-add" in str(fake.requests[0].body["tools"])
    seen = await engine_events(client, sid)
    calls = [d for t, d in seen if t == "EngineToolCall"]
    executed = [d for t, d in seen if t == "ToolExecuted"]
    assert calls[0]["tool_name"] == "fake.add" and executed[0]["result"] == {"result": 42}
    assert executed[0]["call_id"]


async def test_an_mcp_servers_tools_can_wait_for_approval(llm_client: Any, fake: FakeProvider) -> None:
    from tests.api.test_approvals import command, decide, pending

    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS["openai"])
    sid = engine["session_id"]
    await add_server(client, sid, name="gated", requires_approval=True, **STDIO)
    fake.script(Reply(tool_calls=[("gated-add", {"a": 1, "b": 2})]))
    record = await execute(client, engine["engine_id"], "1 + 2?", wait=0)
    approval = await pending(client, sid)
    assert approval["tool_name"] == "gated.add" and approval["arguments"] == {"a": 1, "b": 2}
    assert (await command(client, sid, record["command_id"]))["status"] == "waiting_approval"
    await decide(client, sid, approval["approval_id"], decision="approve", arguments={"a": 40, "b": 2})
    done = await command(client, sid, record["command_id"], wait=20)
    assert done["status"] == "completed" and "42" in done["result"]["text"], done


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_tools_offered_alike_get_names_of_their_own(llm_client: Any, fake: FakeProvider, kind: str) -> None:
    """``fake.lookup.record`` and ``fake.lookup_record`` were both offered as
    fake-lookup_record: Anthropic refuses a request naming a tool twice (every prompt of the
    engine failed PROVIDER_BAD_REQUEST), and a call of that name ran whichever came last."""
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS[kind])
    sid = engine["session_id"]
    await add_server(client, sid, name="fake", **STDIO)
    fake.script(Reply("", tool_calls=[("fake-lookup_record", {"key": "k1"}), ("fake-lookup_record_2", {"key": "k2"})]))
    record = await execute(client, engine["engine_id"], "look both up")
    assert record["status"] == "completed", record["error"]
    offered = [t.get("name") or t["function"]["name"] for t in fake.requests[0].body["tools"]]
    assert len(offered) == len(set(offered)) and {"fake-lookup_record", "fake-lookup_record_2"} <= set(offered)
    ran = {c["tool_name"] for c in record["result"]["tool_calls"]}
    assert ran == {"fake.lookup.record", "fake.lookup_record"}
    assert "dotted:" in str(fake.requests[-1].body["messages"]) and "plain:" in str(fake.requests[-1].body["messages"])
    # Events name the tools as the session has them, never as the provider was offered them
    # (the executing_tools status said fake-lookup_record_2, EngineToolCall fake.lookup_record).
    seen = await engine_events(client, sid)
    statuses = [d for t, d in seen if t == "EngineStatusUpdate" and d["status"] == "executing_tools"]
    assert statuses[0]["tools"] == ["fake.lookup.record", "fake.lookup_record"]
