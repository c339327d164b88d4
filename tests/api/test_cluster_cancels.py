"""Two nodes on one PostgreSQL database (bus/cluster_shared.py): what one node does to a command
another node runs. Deleting an engine cancels its command running on another node, as it does
on its own (bus/engine_registry.py); a cancel reaches a command waiting for approval there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.api.bus_helpers import (
    BLOCK_MS,
    DUMMY,
    cancel,
    cluster_node,
    create_engine,
    finished,
    get_command,
    status_of,
    submit,
)
from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, execute, provider_env
from tests.api.test_approvals import decide, pending
from tests.conftest import create_session
from tests.eventually import eventually
from tests.fakes.provider import FakeProvider, Reply


async def waiting(client: Any, fake: FakeProvider, location: str, *then: Reply) -> tuple[dict[str, Any], str, str]:
    """(engine, session, command): a ToolChat command on ``client``'s node waiting for approval
    of get_weather(location); ``then``: the model's answers after it."""
    engine = await create_llm_engine(client, engine_type="ToolChatEngine", model=MODELS["openai"])
    sid = engine["session_id"]
    await add_weather_tool(client, sid, requires_approval=True)
    fake.script(Reply(tool_calls=[("get_weather", {"location": location})]), *then)
    record = await execute(client, engine["engine_id"], "Weather?", wait=0)
    return engine, sid, record["command_id"]


async def test_deleting_an_engine_cancels_its_command_running_on_another_node(
    pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """It ran on to the end there: only the deleting node's own commands were cancelled."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name) for name in "ab"]
    sid = (await create_session(a))["session_id"]
    eid = (await create_engine(a, sid))["engine_id"]
    running = (await submit(a, sid, delay_ms=BLOCK_MS))["command_id"]

    async def started() -> bool:
        return await status_of(b, sid, running) == "executing"

    await eventually(started)
    other = (await create_session(a))["session_id"]
    await create_engine(a, other)
    untouched = (await submit(a, other, delay_ms=BLOCK_MS))["command_id"]  # the same type elsewhere
    assert (await b.delete(f"/api/engines/{eid}")).status == 200
    record = await finished(b, sid, running)
    assert record["status"] == "cancelled", record
    assert record["error"]["message"] == "cancelled: its engine was deleted"
    assert record["command_type"] == DUMMY
    assert await status_of(b, other, untouched) == "executing"
    assert (await cancel(b, other, untouched))["status"] == "cancelled"


async def test_a_cancel_on_another_node_reaches_a_command_waiting_for_approval(
    fake: FakeProvider, pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """It was 409 "runs on another node, which did not cancel it in time": only an executing
    command was asked to stop, and one waiting for a decision is ``waiting_approval``."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name, **provider_env(fake)) for name in "ab"]
    engine, sid, cid = await waiting(a, fake, "Perth")
    await pending(b, sid)
    assert await status_of(b, sid, cid) == "waiting_approval"
    assert (await cancel(b, sid, cid))["status"] == "cancelled"
    every = await (await b.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    assert [x["status"] for x in every["approvals"]] == ["cancelled"]
    # The session goes on, whichever node is asked.
    fake.script(Reply("fine"))
    assert (await execute(b, engine["engine_id"], "hello"))["status"] == "completed"


async def test_a_node_starting_leaves_a_command_waiting_on_a_live_node_alone(
    fake: FakeProvider, pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A node's start put every command waiting for a decision back to ``queued`` (the rule of
    a restart, for a daemon alone), those of the live nodes too: the decision then found the
    command not waiting, and it never went on."""
    a = await cluster_node(aiohttp_client, pg_url, tmp_path / "a", **provider_env(fake))
    engine, sid, cid = await waiting(a, fake, "Alice Springs", Reply("Sunny."))
    approval = await pending(a, sid)
    b = await cluster_node(aiohttp_client, pg_url, tmp_path / "b", **provider_env(fake))
    assert await status_of(b, sid, cid) == "waiting_approval"
    await decide(b, sid, approval["approval_id"], decision="approve")
    done = await finished(b, sid, cid)
    assert done["status"] == "completed" and done["result"]["text"] == "Sunny.", done


async def test_ending_the_session_on_another_node_ends_a_command_waiting_for_approval(
    fake: FakeProvider, pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """It was left ``waiting_approval`` in an ended session, its request pending: only an
    executing command was asked to stop."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name, **provider_env(fake)) for name in "ab"]
    engine, sid, cid = await waiting(a, fake, "Broome")
    await pending(b, sid)
    assert (await b.delete(f"/api/sessions/{sid}")).status == 200
    done = await finished(b, sid, cid)
    assert done["status"] == "cancelled", done
    every = await (await b.get(f"/api/sessions/{sid}/approvals", params={"status": "all"})).json()
    assert [x["status"] for x in every["approvals"]] == ["cancelled"]


async def test_a_command_run_again_is_not_cancelled_by_the_cancel_of_its_last_run(
    pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A cancel asked on another node is kept (an hour) for the node running the command, which
    re-reads them every tick: the same command run again (``command retry``, the same id) was
    cancelled "by request" within a second, by the request of its previous run."""
    a, b = [await cluster_node(aiohttp_client, pg_url, tmp_path / name) for name in "ab"]
    sid = (await create_session(a))["session_id"]
    await create_engine(a, sid)
    cid = (await submit(a, sid, delay_ms=BLOCK_MS))["command_id"]

    async def started() -> bool:
        return await status_of(b, sid, cid) == "executing"

    await eventually(started)
    assert (await cancel(b, sid, cid))["status"] == "cancelled"
    resp = await b.post(f"/api/sessions/{sid}/commands/retry", json={"command_ids": [cid]})
    assert resp.status == 200, await resp.text()
    await eventually(started)
    holder = a.app[BUS].cluster if a.app[BUS].cluster.owns(sid) else b.app[BUS].cluster
    ticks = holder._ticks

    async def ticked_twice() -> bool:
        return holder._ticks >= ticks + 2  # each tick applies the pending cancel requests

    await eventually(ticked_twice)
    record = await get_command(b, sid, cid)
    assert record["status"] == "executing" and record["attempt"] == 2, record
    assert (await cancel(b, sid, cid))["status"] == "cancelled"
