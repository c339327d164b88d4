"""Registries across nodes: engines and user-code handlers registered on one ``llmgined`` are
used on another at once, and what one node deletes, the others stop running (bus/cluster.py:
``registry_changed``, ``Bus.sync_registry``). Real nodes on one PostgreSQL database (the
``cluster`` fixture of tests/e2e/test_multinode.py).
"""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e import test_multinode
from tests.e2e.test_multinode import CMD, Node, session_events, session_with_engine
from tests.eventually import eventually_blocking

# Three real nodes on one fresh database (a fixture, by its name here).
cluster = test_multinode.cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]

RAISE = "def on_ping(event):\n    raise RuntimeError('{tag}')\n"


def _delete(node: Node, path: str) -> None:
    """DELETE answered 204 (no body)."""
    req = urllib.request.Request(node.base + path, method="DELETE", headers={"Authorization": f"Bearer {node.key}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status in (200, 204), resp.status


def _run(node: Node, sid: str, command_type: str, parameters: dict[str, Any] | None = None) -> tuple[int, Any]:
    return node.request(
        "POST",
        f"/api/sessions/{sid}/commands?wait=30",
        {"command_type": command_type, "parameters": parameters or {}, "metadata": {}},
    )


def test_an_engine_deleted_on_one_node_stops_on_the_others(cluster):
    a, b, _ = cluster
    sid = session_with_engine(a)
    engine_id = a.call("GET", f"/api/engines?session_id={sid}")["engines"][0]["engine_id"]
    status, done = _run(b, sid, CMD, {"prompt": "on b"})
    assert status == 200 and done["status"] == "completed", done  # B runs A's engine at once
    a.call("DELETE", f"/api/engines/{engine_id}")
    # B loaded it before the delete: it must drop it, not keep running a deleted engine.
    code, body = eventually_blocking(lambda: (r := _run(b, sid, CMD, {"prompt": "gone"}))[0] == 404 and r, timeout=30)
    assert body["error"]["code"] == "HANDLER_NOT_FOUND", body
    # A new engine made on B runs on A too (the slot freed on every node).
    b.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
    status, done = _run(a, sid, CMD, {"prompt": "again"})
    assert status == 200 and done["status"] == "completed", done


def test_a_global_command_handler_registered_on_one_node_runs_on_another_until_deleted(cluster):
    a, b, c = cluster
    sid = b.call("POST", "/api/sessions", {})["session_id"]
    code = "def triple(command):\n    return {'n': command['parameters']['n'] * 3}\n"
    a.call("POST", "/api/handlers/commands", {"command_type": "Triple", "handler_function": code})
    assert {h["type"] for h in b.call("GET", "/api/handlers")["handlers"]} == {"Triple"}
    status, done = _run(b, sid, "Triple", {"n": 5})
    assert status == 200 and done["result"] == {"n": 15}, done
    _delete(b, "/api/handlers/commands/Triple")  # deleted on the node that runs it too
    assert a.call("GET", "/api/handlers")["handlers"] == []
    for node in (a, b, c):
        eventually_blocking(lambda node=node: _run(node, sid, "Triple", {"n": 1})[0] == 404, timeout=30)
    # Registered again (elsewhere), with other code: every node runs the new one, not the old.
    again = "def triple(command):\n    return {'v': 2}\n"
    c.call("POST", "/api/handlers/commands", {"command_type": "Triple", "handler_function": again})
    for node in (a, b):
        status, done = _run(node, sid, "Triple", {"n": 1})
        assert status == 200 and done["result"] == {"v": 2}, done


def test_event_handlers_follow_registration_and_deletion_on_another_node(cluster):
    """An event handler registered on A runs for events committed on B (each node runs the
    handlers of the events it commits); deleted on A and replaced, B runs the new one and never
    the old one again."""
    a, b, _ = cluster
    sid = a.call("POST", "/api/sessions", {})["session_id"]
    base = f"/api/sessions/{sid}/handlers/events"
    a.call("POST", base, {"event_type": "Ping", "handler_function": RAISE.format(tag="first")})

    def failures() -> list[dict[str, Any]]:
        return [e for e in session_events(a, sid) if e["event_type"] == "EventHandlerFailed"]

    def ping_on_b() -> str:
        return str(b.call("POST", f"/api/sessions/{sid}/events", {"event_type": "Ping", "data": {}})["event_id"])

    def failed_for(event_id: str, tag: str) -> bool:
        return any(f["data"]["event_id"] == event_id and tag in f["data"]["error"]["message"] for f in failures())

    # Registered on A, soon on B too (no restart; B hears of it within a tick at most): pings
    # on B make it fail, recorded.
    early: list[str] = []

    def first_runs() -> bool:
        early.append(ping_on_b())
        return any(failed_for(p, "first") for p in early)

    eventually_blocking(first_runs, timeout=60, interval=0.2)
    _delete(a, f"{base}/Ping")
    a.call("POST", base, {"event_type": "Ping", "handler_function": RAISE.format(tag="second")})
    pings: list[str] = []

    def second_runs() -> bool:
        pings.append(ping_on_b())
        return any(failed_for(p, "second") for p in pings)

    eventually_blocking(second_runs, timeout=60, interval=0.2)
    switched = next(p for p in pings if failed_for(p, "second"))
    later = [ping_on_b() for _ in range(3)]
    for p in later:
        eventually_blocking(lambda p=p: failed_for(p, "second"), timeout=30)
    # From the ping B ran the new handler for on (events are handled in order), the deleted one
    # never ran again (both are recorded before the new one's: same priority, older first).
    assert not any(failed_for(p, "first") for p in [switched, *later])


def test_a_tool_deleted_on_one_node_is_gone_on_another(cluster):
    """Tools are read from the store at each use: a deletion is seen at once."""
    a, b, _ = cluster
    sid = a.call("POST", "/api/sessions", {})["session_id"]
    code = "def one():\n    return 1\n"
    a.call("POST", f"/api/sessions/{sid}/tools", {"name": "one", "function_code": code})
    assert b.call("POST", f"/api/sessions/{sid}/tools/one/execute", {"arguments": {}})["result"] == 1
    _delete(a, f"/api/sessions/{sid}/tools/one")
    status, body = b.request("POST", f"/api/sessions/{sid}/tools/one/execute", {"arguments": {}})
    assert status == 404, body


def test_one_engine_per_type_in_a_session_whichever_nodes_create_it_at_once(cluster):
    """The slot of a command type in a session is decided by the store: two nodes creating an
    engine of one type (or one an engine, the other a user command handler of its command
    type) at the same moment make one, the other is CONFLICT (each node's memory learns of the
    other's only at its next re-read: two DummyEngines were stored, each node ran its own)."""
    a, b, c = cluster
    handler = {"command_type": CMD, "handler_function": "def run(command):\n    return 1\n"}
    with ThreadPoolExecutor(6) as pool:
        for round_ in range(4):
            sid = a.call("POST", "/api/sessions", {})["session_id"]
            engine = {"engine_type": "DummyEngine", "session_id": sid}
            calls = [(node, "/api/engines", engine) for node in (a, b, c, a, b, c)]
            if round_ % 2:  # a user command handler of DummyEngineCommand races the engines
                calls[1] = (b, f"/api/sessions/{sid}/handlers/commands", handler)
            answers = list(pool.map(lambda call: call[0].request("POST", call[1], call[2]), calls))
            statuses = sorted(status for status, _ in answers)
            assert statuses == [201] + [409] * 5, answers
            assert all(body["error"]["code"] == "CONFLICT" for status, body in answers if status == 409), answers
            engines = a.call("GET", f"/api/engines?session_id={sid}")["engines"]
            handlers = a.call("GET", f"/api/sessions/{sid}/handlers")["handlers"]
            assert len(engines) + len(handlers) == 1, (engines, handlers)
