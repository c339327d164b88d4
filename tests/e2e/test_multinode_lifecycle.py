"""The command lifecycle across nodes: ``command wait`` on one node for commands another runs,
dependencies (``after``) released once in the cluster even when the node that stored the
blocked command is gone, retries on the node holding the session, and the queue view's
throughput counting the cluster (bus/events.py ``subscribe_read_back``; commands/deps.py,
waiting.py, queueview.py). Real nodes on one PostgreSQL database (tests/e2e/test_multinode.py).
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.e2e import test_multinode
from tests.e2e.test_multinode import CMD, Node, session_events, session_with_engine
from tests.eventually import eventually_blocking

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]

# Three real nodes on one fresh database (a fixture, by its name here).
cluster = test_multinode.cluster

FLAKY = (
    "def flaky(command):\n"
    "    if command.attempt < 2:\n"
    "        raise RuntimeError('first fails')\n"
    "    return {'attempt': command.attempt}\n"
)


def _of(events: list[dict[str, Any]], cid: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == kind and e["data"].get("command_id") == cid]


def _wait(node: Node, ids: list[str], **extra: Any) -> Any:
    return node.call("POST", "/api/commands/wait", {"command_ids": ids, "timeout": 120, **extra})


def test_command_wait_on_one_node_for_commands_another_runs(cluster):
    a, b, _ = cluster
    sid = session_with_engine(a)
    first = a.submit(sid, "one", delay_ms=1500)["command_id"]  # A takes the session: runs here
    second = a.submit(sid, "two", delay_ms=200)["command_id"]
    started = _wait(b, [first], status=["executing"])
    assert started["done"] and started["commands"][0]["status"] in ("executing", "completed"), started
    done = _wait(b, [first, second])
    assert done["done"] and [c["status"] for c in done["commands"]] == ["completed", "completed"], done
    assert done["commands"][0]["result"]["response"]


def test_a_dependency_is_released_once_even_if_the_node_that_blocked_it_stops(cluster):
    a, b, c = cluster
    sid = session_with_engine(a)
    first = a.submit(sid, "first", delay_ms=3000)["command_id"]
    body = {"command_type": CMD, "parameters": {"prompt": "then"}, "after": [first]}
    blocked = b.call("POST", f"/api/sessions/{sid}/commands", body)
    assert blocked["status"] == "blocked"
    # B, which stored it blocked, goes away before its dependency ends: the others follow it.
    eventually_blocking(
        lambda: any(i["command_id"] == blocked["command_id"] for i in c.call("GET", "/api/commands")["commands"]),
        timeout=30,
    )
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(timeout=30)
    done = _wait(c, [first, blocked["command_id"]])
    assert done["done"] and [x["status"] for x in done["commands"]] == ["completed", "completed"], done
    events = session_events(a, sid)
    assert len(_of(events, blocked["command_id"], "CommandQueued")) == 1  # released once
    assert len(_of(events, blocked["command_id"], "CommandStarted")) == 1


def test_dependencies_across_nodes_cancel_down_the_chain(cluster):
    a, b, c = cluster
    sid = session_with_engine(a)
    long = a.submit(sid, "long", delay_ms=600_000)["command_id"]
    body = {"command_type": CMD, "parameters": {"prompt": "x"}, "after": [long]}
    waits = b.call("POST", f"/api/sessions/{sid}/commands", body)["command_id"]
    body["after"] = [waits]
    chained = c.call("POST", f"/api/sessions/{sid}/commands", body)["command_id"]
    c.call("POST", f"/api/sessions/{sid}/commands/{long}/cancel")
    done = _wait(a, [long, waits, chained])
    assert [x["status"] for x in done["commands"]] == ["cancelled"] * 3, done
    reasons = [x["error"]["details"].get("reason") for x in done["commands"][1:]]
    assert reasons == ["dependency_failed", "dependency_failed"]
    events = session_events(a, sid)
    assert all(len(_of(events, cid, "CommandResult")) == 1 for cid in (long, waits, chained))


def test_a_blocked_command_is_cancelled_and_waited_for_from_any_node_at_once(cluster):
    """A blocked command another node stored, asked of a node that does not follow it yet (its
    CommandBlocked not read back): cancel was 409 "runs on another node, which did not cancel
    it in time" at once, and the command then ran. And a node that followed one another node
    released and ran answered ``GET ?wait`` with its own record: ``blocked``."""
    a, b, _ = cluster
    sid = session_with_engine(a)
    for round_ in range(6):
        first = a.submit(sid, "first", delay_ms=300)["command_id"]
        body = {"command_type": CMD, "parameters": {"prompt": "then"}, "after": [first]}
        then = b.call("POST", f"/api/sessions/{sid}/commands", body)["command_id"]
        if round_ % 2 == 0:
            status, cancelled = a.request("POST", f"/api/sessions/{sid}/commands/{then}/cancel")
            assert status == 200 and cancelled["status"] == "cancelled", cancelled
            assert cancelled["error"]["details"] == {"reason": "cancel"}, cancelled
            want = "cancelled"
        else:
            want = "completed"
        for node in (a, b):  # a follows it now, or never did; b stored it
            got = node.call("GET", f"/api/sessions/{sid}/commands/{then}?wait=60")
            assert got["status"] == want, (round_, got)
        _wait(a, [first])
    events = session_events(a, sid)
    blocked = [e["data"]["command_id"] for e in events if e["event_type"] == "CommandBlocked"]
    assert len(blocked) == 6 and all(len(_of(events, cid, "CommandResult")) == 1 for cid in blocked)


def test_a_retry_runs_once_on_the_node_holding_the_session(cluster):
    a, b, c = cluster
    sid = a.call("POST", "/api/sessions", {})["session_id"]
    a.call("POST", f"/api/sessions/{sid}/handlers/commands", {"command_type": "Flaky", "handler_function": FLAKY})
    metadata = {"retries": 3, "backoff": {"type": "fixed", "base": 0.3}}
    ids = [
        node.call("POST", f"/api/sessions/{sid}/commands", {"command_type": "Flaky", "metadata": metadata})[
            "command_id"
        ]
        for node in (a, b, c)
    ]
    done = _wait(b, ids)
    assert done["done"] and all(x["status"] == "completed" and x["attempt"] == 2 for x in done["commands"]), done
    events = session_events(c, sid)
    for cid in ids:
        assert [e["data"]["attempt"] for e in _of(events, cid, "CommandStarted")] == [1, 2]
        assert len(_of(events, cid, "CommandRetrying")) == 1


def test_the_queue_view_counts_what_the_whole_cluster_finished(cluster):
    a, _, c = cluster
    sid = session_with_engine(a)
    ids = [a.submit(sid, f"n{i}")["command_id"] for i in range(6)]
    assert _wait(a, ids)["done"]
    # C ran none of them (A holds the session); its view counts them all the same.
    eventually_blocking(
        lambda: c.call("GET", "/api/commands")["finished_last_minute"].get("completed", 0) >= len(ids), timeout=30
    )


def test_a_restarted_node_shows_every_command_it_was_running_interrupted_at_once(pg_url, tmp_path):
    # A node killed with sessions running, restarted in its home: its first ticks took the
    # sessions back 20 at a time, one tick (a second) apart, so for seconds after it listened
    # a command that no longer ran still read "executing". Now every session of the node that
    # ran there before is taken back before it listens, as on SQLite.
    from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http

    env = {"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": "600"}
    home, port = tmp_path / "a", free_port()
    home.mkdir()
    proc = run_daemon(home, "--port", str(port), env=env)
    try:
        wait_for_http(port, proc, timeout=60)
        a = Node(home, port, proc, pg_url)
        running = []
        for i in range(45):
            sid = session_with_engine(a)
            running.append((sid, a.submit(sid, f"long{i}", delay_ms=600_000)["command_id"]))
            a.submit(sid, f"queued{i}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = run_daemon(home, "--port", str(port), env=env)
        wait_for_http(port, proc, timeout=60)
        a = Node(home, port, proc, pg_url)
        states = [a.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] for sid, cid in running]
        assert states == ["interrupted"] * len(running)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
