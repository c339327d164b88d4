"""What an MCP server announces is checked where its tools/list answer is read
(mcp/connection.py ``_list_tools``): a tool whose name breaks the grammar
(protocol/grammar.py MCP_TOOL_NAME_PATTERN), a name announced twice, a description or input
schema over its limit, tools past the per-server limits are skipped - one log line, and the
reasons in the server's status - and the server's other tools are offered. Against a real
stdio server that speaks the protocol by hand (tests/fakes/mcp_hostile.py)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.mcp.connection import MAX_ANNOUNCED, MAX_LISTING, MAX_TOOLS

from tests.api.llm_helpers import MODELS, create_llm_engine, execute
from tests.api.test_mcp_servers import add_server, execute_tool
from tests.conftest import create_session
from tests.fakes.provider import FakeProvider, Reply

HOSTILE = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_hostile.py")
GOOD = ["hostile.ok", "hostile.get-weather", "hostile.lookup.record"]
PROVIDER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's and Anthropic's rule


async def test_tools_outside_the_grammar_are_skipped_not_the_server(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmgine.mcp")
    sid = (await create_session(app_client))["session_id"]
    server = await add_server(app_client, sid, name="hostile", command=sys.executable, args=[HOSTILE, "names"])
    assert server["status"] == "running", server["last_error"]
    assert server["tools"] == GOOD
    assert server["tools_skipped"] == 11
    reasons = {s["name"]: s["reason"] for s in server["skipped_tools"]}
    for name in ("", "has space", "ctl\\x1b[31mred", "a/b", "a..b", "x" * 65, ".dot", "new\\n"):
        assert reasons[name].startswith("name: must be 1 to 64 of"), (name, reasons)
    assert reasons["ok"] == "name: announced twice (the first is kept)"
    assert reasons["big"].startswith("description: 1000000 characters, over 8192")
    assert reasons["wide"].startswith("inputSchema: ") and "over 65536" in reasons["wide"]
    assert not any("\x1b" in s["name"] for s in server["skipped_tools"])  # escaped, never raw

    # One log line for the listing, naming the first few and how many.
    lines = [r.getMessage() for r in caplog.records if "tools skipped" in r.getMessage()]
    assert (
        len(lines) == 1
        and lines[0].startswith("mcp server hostile@")
        and ": 11 of its tools skipped (not offered)" in lines[0]
    ), lines
    assert "\x1b" not in lines[0]

    # The session's tools, each with the description it announced; the openai format's names
    # are names a provider accepts; the good ones run.
    tools = (await (await app_client.get(f"/api/sessions/{sid}/tools")).json())["tools"]
    mine = [t for t in tools if t["server"] == "hostile"]
    assert [t["name"] for t in mine] == GOOD and mine[0]["description"] == "fine"
    offered = await (await app_client.get(f"/api/sessions/{sid}/tools", params={"format": "openai"})).json()
    assert all(PROVIDER_NAME.match(t["function"]["name"]) for t in offered), offered
    assert (await execute_tool(app_client, sid, "hostile.get-weather"))["result"] == "get-weather"
    resp = await app_client.get(f"/api/sessions/{sid}/tools/hostile.big")
    assert resp.status == 404


async def test_thousands_of_tools_are_cut_at_the_limit(app_client: Any) -> None:
    sid = (await create_session(app_client))["session_id"]
    server = await add_server(app_client, sid, name="many", command=sys.executable, args=[HOSTILE, "many"])
    assert server["status"] == "running", server["last_error"]
    assert len(server["tools"]) == MAX_TOOLS and server["tools"][-1] == f"many.t{MAX_TOOLS - 1}"
    assert server["tools_skipped"] == 1
    assert server["skipped_tools"][0]["reason"] == f"tools/list: further pages not read ({MAX_TOOLS} tools kept)"


async def test_a_server_announcing_megabytes_is_read_no_further(app_client: Any) -> None:
    sid = (await create_session(app_client))["session_id"]
    server = await add_server(app_client, sid, name="huge", command=sys.executable, args=[HOSTILE, "huge"])
    assert server["status"] == "running", server["last_error"]
    each = 8_000 + 36  # characters of its description and its schema
    kept = MAX_LISTING // each
    assert len(server["tools"]) == kept, len(server["tools"])
    last = server["skipped_tools"][-1]
    assert last["reason"] == f"tools/list: further pages not read (over {MAX_ANNOUNCED} characters announced)"
    # Read: the pages up to 8 MiB of descriptions (11 of them), not the 200 of 160 MB.
    pages = MAX_ANNOUNCED // (100 * each) + 1
    assert server["tools_skipped"] == pages * 100 - kept + 1, server["tools_skipped"]


async def test_a_toolchat_engine_is_offered_only_the_good_tools(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS["openai"])
    sid = engine["session_id"]
    await add_server(client, sid, name="hostile", command=sys.executable, args=[HOSTILE, "names"])
    fake.script(Reply("Checking.", tool_calls=[("hostile-get-weather", {})]))
    record = await execute(client, engine["engine_id"], "weather?")
    assert record["status"] == "completed", record
    assert record["result"]["tool_calls"][0]["tool_name"] == "hostile.get-weather"
    offered = [t["function"]["name"] for t in fake.requests[0].body["tools"]]
    assert sorted(offered) == ["hostile-get-weather", "hostile-lookup_record", "hostile-ok"]
    assert len(str(fake.requests[0].body)) < 10_000  # the 1 MB description stayed out
