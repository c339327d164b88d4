"""Approvals on several real nodes sharing one PostgreSQL database, when the node running the
waiting command is killed (``kill -9``): a survivor takes the session over after the lease
timeout and the command goes on there, as it does after a restart of a daemon alone
(bus/approvals.py ``requeue``, bus/cluster_shared.py): waiting again for the same approval, or
carrying out a decision acknowledged just before the kill. Before, the waiting command was left
``waiting_approval`` for ever, and a decision made before or after the kill ended it
``interrupted``, the approved tool never run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api.llm_helpers import MODELS, WEATHER_TOOL, provider_env
from tests.clitools import stop_process
from tests.e2e.test_multinode import Node, _lease_holder, _node_id, start_on_a_free_port, three_nodes
from tests.eventually import eventually_blocking
from tests.fakes.provider import FakeProvider, FakeProviderThread, Reply

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProviderThread() as provider:
        yield provider


@pytest.fixture
def llm_cluster(pg_url: str, tmp_path: Path, fake: FakeProvider) -> Iterator[list[Node]]:
    with three_nodes(pg_url, tmp_path, **provider_env(fake)) as nodes:
        yield nodes


def waiting_command(node: Node, fake: FakeProvider, location: str) -> tuple[str, str, str]:
    """(session, command, approval): a ToolChat command waiting for approval of get_weather."""
    sid = node.call("POST", "/api/sessions", {})["session_id"]
    engine = node.call(
        "POST", "/api/engines", {"engine_type": "ToolChatEngine", "session_id": sid, "model_name": MODELS["openai"]}
    )
    tool = {"name": "get_weather", "description": "Weather for a city", "function_code": WEATHER_TOOL}
    node.call(
        "POST",
        f"/api/sessions/{sid}/tools",
        {**tool, "parameters": {"location": {"type": "string"}}, "requires_approval": True},
    )
    fake.script(Reply("checking", tool_calls=[("get_weather", {"location": location})]))
    cid = node.call("POST", f"/api/engines/{engine['engine_id']}/execute?wait=0", {"prompt": "Weather?"})["command_id"]
    approvals = eventually_blocking(lambda: node.call("GET", f"/api/sessions/{sid}/approvals")["approvals"], timeout=30)
    return sid, cid, approvals[0]["approval_id"]


def holder_and_survivors(cluster: list[Node], sid: str) -> tuple[Node, list[Node]]:
    holder = _lease_holder(cluster[0], sid)
    victim = next(n for n in cluster if _node_id(n) == holder)
    return victim, [n for n in cluster if n is not victim]


def event_types(node: Node, sid: str) -> list[str]:
    return [e["event_type"] for e in node.call("GET", f"/api/sessions/{sid}/events?limit=1000")["events"]]


def taken_over(node: Node, sid: str, victim_id: str) -> bool:
    return _lease_holder(node, sid) != victim_id


def test_a_command_waiting_on_a_killed_node_waits_again_on_a_survivor(llm_cluster, fake):
    sid, cid, approval_id = waiting_command(llm_cluster[0], fake, "Perth")
    victim, (b, c) = holder_and_survivors(llm_cluster, sid)
    victim_id = _node_id(victim)
    calls_before = len(fake.requests)
    victim.kill()
    eventually_blocking(lambda: taken_over(b, sid, victim_id), timeout=60)
    eventually_blocking(
        lambda: b.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "waiting_approval", timeout=30
    )
    assert [a["approval_id"] for a in b.call("GET", f"/api/sessions/{sid}/approvals")["approvals"]] == [approval_id]
    assert len(fake.requests) == calls_before  # the model not asked again
    fake.script(Reply("Perth: 21"))
    c.call("POST", f"/api/sessions/{sid}/approvals/{approval_id}", {"decision": "approve"})
    done = c.call("GET", f"/api/sessions/{sid}/commands/{cid}?wait=30")
    assert done["status"] == "completed", done
    assert "Perth" in done["result"]["text"]
    kinds = event_types(c, sid)
    assert kinds.count("ApprovalRequested") == 1 and kinds.count("ToolExecuted") == 1, kinds


def test_a_decision_acknowledged_just_before_a_kill_is_carried_out_by_a_survivor(llm_cluster, fake):
    """The decision made on the node running the command, then ``kill -9`` of that node: it is
    carried out on the survivor that takes the session over, once."""
    nodes = list(llm_cluster)
    for _attempt in range(len(nodes) - 1):  # until the kill lands before the engine took the decision
        sid, cid, approval_id = waiting_command(nodes[0], fake, "Hobart")
        victim, survivors = holder_and_survivors(nodes, sid)
        calls_before = len(fake.requests)
        fake.script(Reply("Hobart: 21"))
        decided = victim.call("POST", f"/api/sessions/{sid}/approvals/{approval_id}", {"decision": "approve"})
        assert decided["status"] == "approved"  # the 200
        victim.kill()
        nodes = survivors
        with psycopg.connect(victim.pg_url) as conn:
            row: Any = conn.execute(
                "SELECT state IS NOT NULL FROM approvals WHERE approval_id = %s", (approval_id,)
            ).fetchone()
        if not row[0]:  # the engine took it and went on to the tool: interrupted is right
            fake.script_items.clear()
            continue
        s = survivors[0]
        done = s.call("GET", f"/api/sessions/{sid}/commands/{cid}?wait=60")
        assert done["status"] == "completed", done
        assert "Hobart" in done["result"]["text"] and len(fake.requests) == calls_before + 1
        kinds = event_types(s, sid)
        assert kinds.count("ApprovalDecided") == 1 and kinds.count("ToolExecuted") == 1, kinds
        return
    pytest.fail("the kill never came before the engine took the decision")


@pytest.mark.parametrize("how", ["graceful", "killed"])
def test_a_lone_node_restarted_in_its_home_resumes_the_waiting_command(
    pg_url: str, tmp_path: Path, fake: FakeProvider, how: str
) -> None:
    """One node on PostgreSQL (a cluster of one): the restart takes the session back (its
    lease given back by a clean stop, or the dead predecessor's taken at start) and the command
    waits again for the same approval, as on SQLite."""
    home = tmp_path / "solo"
    home.mkdir()
    env = {"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": "30", **provider_env(fake)}
    port, proc = start_on_a_free_port(home, env)
    try:
        node = Node(home, port, proc, pg_url)
        sid, cid, approval_id = waiting_command(node, fake, "Cairns")
        if how == "graceful":
            stop_process(proc)
        else:
            node.kill()
        port, proc = start_on_a_free_port(home, env)
        node = Node(home, port, proc, pg_url)
        eventually_blocking(
            lambda: node.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "waiting_approval",
            timeout=30,
        )
        fake.script(Reply("Cairns: 21"))
        node.call("POST", f"/api/sessions/{sid}/approvals/{approval_id}", {"decision": "approve"})
        done = node.call("GET", f"/api/sessions/{sid}/commands/{cid}?wait=30")
        assert done["status"] == "completed", done
        assert event_types(node, sid).count("ToolExecuted") == 1
    finally:
        stop_process(proc)
