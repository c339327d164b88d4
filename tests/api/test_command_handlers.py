"""Spec section 6: user-code command handlers run by the command bus, and ``bus.execute``.

Real worker processes and the real command runner; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import json
import textwrap

from llmgine_daemon.api.keys import BUS

from tests.conftest import assert_envelope, create_session
from tests.eventually import eventually

GREET = textwrap.dedent("""
    async def handle_greet(command):
        await bus.publish("Greeting", {"to": command.parameters["name"]})
        return {"hello": command.parameters["name"], "command_id": command.command_id}
""")


async def add_command_handler(client, sid, command_type, code, *, scope="session", status=201):
    base = f"/api/sessions/{sid}/handlers" if scope == "session" else "/api/handlers"
    resp = await client.post(
        f"{base}/commands", json={"command_type": command_type, "handler_function": textwrap.dedent(code)}
    )
    assert resp.status == status, await resp.text()
    return await resp.json()


async def run(client, sid, command_type, parameters=None, metadata=None, status=200):
    resp = await client.post(
        f"/api/sessions/{sid}/commands?wait=60",
        json={"command_type": command_type, "parameters": parameters or {}, "metadata": metadata or {}},
    )
    assert resp.status == status, await resp.text()
    return await resp.json()


async def events_of(client, sid):
    rows = await client.server.app[BUS].store.fetchall(
        "SELECT event_type, data, source FROM events WHERE session_id = ? ORDER BY seq", (sid,)
    )
    return [(r[0], json.loads(r[1]), r[2]) for r in rows]


async def commands_of(client, sid, command_type):
    out = await (await client.get(f"/api/sessions/{sid}/commands?command_type={command_type}&limit=100")).json()
    return out["commands"]


async def test_command_handler_answers_a_command(app_client):
    sid = (await create_session(app_client))["session_id"]
    handler = await add_command_handler(app_client, sid, "Greet", GREET)
    assert handler["kind"] == "command" and handler["function"] == "handle_greet"
    record = await run(app_client, sid, "Greet", {"name": "Ada"})
    assert record["status"] == "completed", record
    assert record["result"] == {"hello": "Ada", "command_id": record["command_id"]}
    kinds = [(t, s) for t, _, s in await events_of(app_client, sid) if t != "SessionStarted"]
    assert kinds == [("CommandStarted", "bus"), ("Greeting", "handler"), ("CommandResult", "bus")]


async def test_failure_carries_the_users_exception(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(
        app_client,
        sid,
        "Divide",
        """
        def helper(x):
            return 1 / x

        def divide(command):
            print("dividing by", command.parameters["by"])
            return helper(command.parameters["by"])
    """,
    )
    record = await run(app_client, sid, "Divide", {"by": 0})
    assert record["status"] == "failed"
    error = record["error"]
    assert error["code"] == "COMMAND_EXECUTION_FAILED"
    assert error["message"] == "ZeroDivisionError: division by zero"
    details = error["details"]
    assert details["exception_type"] == "ZeroDivisionError"
    assert details["message"] == "division by zero"
    assert details["reason"] == "EXECUTION_FAILED"
    assert details["function"] == "divide" and details["output"] == "dividing by 0\n"
    tb = details["traceback"]
    # The user's frames (with their source lines), none of the daemon's.
    assert "in divide" in tb and "in helper" in tb and "return 1 / x" in tb
    assert "llmgine_daemon" not in tb and "runner.py" not in tb
    result = [d for t, d, _ in await events_of(app_client, sid) if t == "CommandResult"]
    assert result[0]["error"]["details"]["exception_type"] == "ZeroDivisionError"


async def test_timeout_kills_a_spinning_handler(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Spin", "def spin(command):\n    while True:\n        pass\n")
    record = await run(app_client, sid, "Spin", metadata={"timeout": 0.5})
    assert record["status"] == "timed_out" and record["error"]["code"] == "COMMAND_TIMEOUT"
    assert (await app_client.get("/api/health")).status == 200
    await add_command_handler(app_client, sid, "Greet", GREET)  # the pool recovered
    assert (await run(app_client, sid, "Greet", {"name": "B"}))["status"] == "completed"


async def test_session_handler_overrides_global_and_409(app_client):
    sid = (await create_session(app_client))["session_id"]
    other = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Who", "def g(command):\n    return 'global'\n", scope="global")
    await add_command_handler(app_client, sid, "Who", "def s(command):\n    return 'session'\n")
    assert (await run(app_client, sid, "Who"))["result"] == "session"
    assert (await run(app_client, other, "Who"))["result"] == "global"

    for scope in ("session", "global"):
        resp = await app_client.post(
            f"/api/sessions/{sid}/handlers/commands" if scope == "session" else "/api/handlers/commands",
            json={"command_type": "Who", "handler_function": "def x(command):\n    return 1\n"},
        )
        assert resp.status == 409
        assert_envelope(await resp.json(), "CONFLICT")

    # Deleting the session's handler: the global one answers again; deleting that too: 404.
    assert (await app_client.delete(f"/api/sessions/{sid}/handlers/commands/Who")).status == 204
    assert (await run(app_client, sid, "Who"))["result"] == "global"
    assert (await app_client.delete("/api/handlers/commands/Who")).status == 204
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json={"command_type": "Who"})
    assert resp.status == 404
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")
    resp = await app_client.delete("/api/handlers/commands/Who")
    assert resp.status == 404
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")


async def test_command_handlers_survive_restart(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    await add_command_handler(client, sid, "Greet", GREET)
    await add_command_handler(client, sid, "Ping", "def ping(c):\n    return 'pong'\n", scope="global")
    await client.close()
    client = await make_client()
    assert (await run(client, sid, "Greet", {"name": "again"}))["result"]["hello"] == "again"
    assert (await run(client, sid, "Ping"))["result"] == "pong"
    await add_command_handler(client, sid, "Greet", GREET, status=409)


async def test_bus_execute_runs_a_nested_command_in_the_same_session(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Greet", GREET)
    await add_command_handler(
        app_client,
        sid,
        "Outer",
        """
        async def outer(command):
            first = await bus.execute("Greet", {"name": "inner"})
            try:
                await bus.execute("Missing", {})
            except Exception as exc:
                missing = f"{type(exc).__name__}: {exc}"
            return {"inner": first["hello"], "missing": missing}
    """,
    )
    record = await run(app_client, sid, "Outer")
    assert record["status"] == "completed", record
    assert record["result"]["inner"] == "inner"
    assert record["result"]["missing"].startswith("BusCallError: ")
    assert "HANDLER_NOT_FOUND" in record["result"]["missing"] or "no handler" in record["result"]["missing"]

    inner = await commands_of(app_client, sid, "Greet")
    assert len(inner) == 1 and inner[0]["status"] == "completed"
    assert inner[0]["metadata"]["parent_command_id"] == record["command_id"]
    assert inner[0]["trace_id"] == record["trace_id"]
    # The nested command is bracketed by its own events, inside the outer command's.
    started = [
        (t, d["command_id"]) for t, d, _ in await events_of(app_client, sid) if t in ("CommandStarted", "CommandResult")
    ]
    outer_id, inner_id = record["command_id"], inner[0]["command_id"]
    assert started == [
        ("CommandStarted", outer_id),
        ("CommandStarted", inner_id),
        ("CommandResult", inner_id),
        ("CommandResult", outer_id),
    ]


async def test_nested_failure_reaches_the_caller(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Fail", "def f(c):\n    raise RuntimeError('inner broke')\n")
    await add_command_handler(
        app_client,
        sid,
        "Outer",
        """
        async def outer(command):
            return await bus.execute("Fail", {})
    """,
    )
    record = await run(app_client, sid, "Outer")
    assert record["status"] == "failed"
    assert record["error"]["details"]["exception_type"] == "BusCallError"
    assert "inner broke" in record["error"]["message"]
    inner = await commands_of(app_client, sid, "Fail")
    assert inner[0]["error"]["details"]["exception_type"] == "RuntimeError"


# A command handler that executes its own command type again, one level deeper each time.
LOOP = """
        async def loop(command):
            return await bus.execute("Loop", {"n": command.parameters.get("n", 0) + 1})
    """


async def test_depth_limit_stops_a_handler_that_executes_itself(make_client):
    client = await make_client(LLMGINE_SANDBOX_MAX_DEPTH="3")
    sid = (await create_session(client))["session_id"]
    await add_command_handler(client, sid, "Loop", LOOP)
    record = await run(client, sid, "Loop", {"n": 0})
    assert record["status"] == "failed"
    assert "depth limit" in record["error"]["message"]
    loops = await commands_of(client, sid, "Loop")
    # Depth 0 (submitted) .. 3 (the limit); the fifth bus.execute is refused.
    assert sorted(c["parameters"]["n"] for c in loops) == [0, 1, 2, 3]
    assert all(c["status"] == "failed" for c in loops)
    # The session is free again: nothing was left holding its queue.
    await add_command_handler(client, sid, "Greet", GREET)
    assert (await run(client, sid, "Greet", {"name": "after"}))["status"] == "completed"


async def test_handlers_of_a_nested_command_s_events_run_at_its_depth(make_client):
    """A handler of CommandResult that executes a command: its command's CommandResult ran
    the handler again at depth 0 (the daemon wrote the event: no depth was noted), so the
    chain went on past ``sandbox.max_depth`` for as long as the session lived. Now the events
    of a command ``bus.execute`` ran are handled at its depth: the chain stops at the limit."""
    client = await make_client(LLMGINE_SANDBOX_MAX_DEPTH="2")
    sid = (await create_session(client))["session_id"]
    await add_command_handler(client, sid, "Noop", "async def noop(command):\n    return 1\n")
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/events",
        json={
            "event_type": "CommandResult",
            "handler_function": "async def again(event):\n    await bus.execute('Noop', {})\n",
        },
    )
    assert resp.status == 201, await resp.text()
    assert (await run(client, sid, "Noop"))["status"] == "completed"

    async def refused() -> list[str]:
        failed = [d for t, d, _ in await events_of(client, sid) if t == "EventHandlerFailed"]
        return [f["error"]["message"] for f in failed]

    messages = await eventually(refused, message="the handler refused at the depth limit")
    assert all("depth limit" in m for m in messages), messages
    noops = await commands_of(client, sid, "Noop")
    assert sorted(c["metadata"].get("_depth", 0) for c in noops) == [0, 1, 2]
    await client.delete(f"/api/sessions/{sid}")


async def test_a_client_cannot_set_the_nesting_depth(make_client):
    """``metadata._depth`` is the daemon's: a client that set it to -1000000 ran its handler a
    million levels below the limit (a handler that executes itself went on and on), and one
    that set it to "x" failed its command with the daemon's own traceback."""
    client = await make_client(LLMGINE_SANDBOX_MAX_DEPTH="3")
    sid = (await create_session(client))["session_id"]
    await add_command_handler(client, sid, "Loop", LOOP)
    for depth in (-1000000, "x", 1):
        body = await run(client, sid, "Loop", {"n": 0}, {"_depth": depth}, status=422)
        assert assert_envelope(body, "VALIDATION_ERROR")["details"]["field"] == "metadata._depth"
    resp = await client.post(
        f"/api/sessions/{sid}/commands/batch",
        json={"commands": [{"command_type": "Loop", "metadata": {"_depth": -9}}]},
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["details"]["field"] == "commands[0].metadata._depth"
    assert await commands_of(client, sid, "Loop") == []
    # bus.execute sets it: the limit holds as before.
    record = await run(client, sid, "Loop", {"n": 0})
    assert "depth limit" in record["error"]["message"]
    assert len(await commands_of(client, sid, "Loop")) == 4


async def test_bus_execute_from_an_event_handler_queues_the_command(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Greet", GREET)
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events",
        json={
            "event_type": "Arrived",
            "handler_function": textwrap.dedent("""
            async def on_arrival(event):
                result = await bus.execute("Greet", {"name": event.data["who"]})
                await bus.publish("Greeted", result)
        """),
        },
    )
    assert resp.status == 201, await resp.text()
    resp = await app_client.post(
        f"/api/sessions/{sid}/events", json={"event_type": "Arrived", "data": {"who": "Grace"}}
    )
    assert resp.status == 201

    async def greetings():
        return [d for t, d, _ in await events_of(app_client, sid) if t == "Greeted"]

    greeted = await eventually(greetings, interval=0.05)
    assert greeted and greeted[0]["hello"] == "Grace"
    inner = await commands_of(app_client, sid, "Greet")
    assert inner[0]["status"] == "completed" and "parent_command_id" not in inner[0]["metadata"]


async def test_bus_execute_from_a_tool_called_by_a_handler(app_client):
    """handler -> bus.call_tool -> tool -> bus.execute: still inside the running command, so it
    runs inline rather than waiting behind it (which would deadlock)."""
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Greet", GREET)
    resp = await app_client.post(
        f"/api/sessions/{sid}/tools",
        json={
            "name": "greet_twice",
            "function_code": textwrap.dedent("""
            async def greet_twice(name: str):
                a = await bus.execute("Greet", {"name": name})
                b = await bus.execute("Greet", {"name": name + "!"})
                return [a["hello"], b["hello"]]
        """),
        },
    )
    assert resp.status == 201, await resp.text()
    await add_command_handler(
        app_client,
        sid,
        "Outer",
        """
        async def outer(command):
            return await bus.call_tool("greet_twice", {"name": "Lin"})
    """,
    )
    record = await run(app_client, sid, "Outer")
    assert record["status"] == "completed", record
    assert record["result"] == ["Lin", "Lin!"]


async def test_a_nested_command_ends_with_its_parent(app_client):
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Spin", "def spin(c):\n    while True:\n        pass\n")
    await add_command_handler(
        app_client,
        sid,
        "Outer",
        """
        async def outer(command):
            return await bus.execute("Spin", {})
    """,
    )
    record = await run(app_client, sid, "Outer", metadata={"timeout": 0.5})
    assert record["status"] == "timed_out", record
    [inner] = await commands_of(app_client, sid, "Spin")
    assert inner["status"] == "cancelled" and inner["error"]["code"] == "COMMAND_CANCELLED"
    assert "ended first" in inner["error"]["message"]
    # Nothing is left running: the session takes the next command.
    await add_command_handler(app_client, sid, "Greet", GREET)
    assert (await run(app_client, sid, "Greet", {"name": "next"}))["status"] == "completed"


async def test_replace_swaps_the_scopes_command_handler_in_one_step(make_client):
    # ?replace=true (`handler add command --replace`, as `tool register --replace`): a setup
    # script re-run swaps the handler instead of failing with 409; the new one answers at once
    # and after a restart (the old row is gone, not only unregistered in memory).
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    for scope, base in (("session", f"/api/sessions/{sid}/handlers"), ("global", "/api/handlers")):
        await add_command_handler(client, sid, f"V{scope}", "def one(c):\n    return 1\n", scope=scope)
        resp = await client.post(
            f"{base}/commands?replace=true",
            json={"command_type": f"V{scope}", "handler_function": "def two(c):\n    return 2\n"},
        )
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["function"] == "two"
        assert (await run(client, sid, f"V{scope}"))["result"] == 2
        listed = (await (await client.get(f"{base}?kind=command")).json())["handlers"]
        assert [h["function"] for h in listed if h["type"] == f"V{scope}"] == ["two"]
    # Nothing to replace is fine too.
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/commands?replace=true",
        json={"command_type": "Fresh", "handler_function": "def f(c):\n    return 'f'\n"},
    )
    assert resp.status == 201, await resp.text()
    await client.close()
    client = await make_client()
    assert (await run(client, sid, "Vsession"))["result"] == 2
    assert (await run(client, sid, "Vglobal"))["result"] == 2
    assert (await run(client, sid, "Fresh"))["result"] == "f"


async def test_replace_never_takes_an_engines_command_type(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid})
    assert resp.status == 201, await resp.text()
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/commands?replace=true",
        json={"command_type": "DummyEngineCommand", "handler_function": "def x(c):\n    return 1\n"},
    )
    assert resp.status == 409
    assert assert_envelope(await resp.json(), "CONFLICT")["details"]["owner"].startswith("engine:")


BIG = textwrap.dedent("""
    import time

    def big(command):
        if command.parameters.get("hold"):
            time.sleep(command.parameters["hold"])
        return "x" * command.parameters["size"]
""")


async def test_a_running_batch_keeps_no_result_of_its_finished_members_in_memory(app_client):
    """A batch held each finished member's record, its result included, until the whole batch
    ended: a token's batch of 10,000 user-code commands returning 1 MiB each held ~10 GiB of the
    daemon's memory. The result is in the store; the answers read it from there."""
    sid = (await create_session(app_client))["session_id"]
    await add_command_handler(app_client, sid, "Big", BIG)
    size = 200_000
    members = [{"command_type": "Big", "parameters": {"size": size}} for _ in range(3)]
    members.append({"command_type": "Big", "parameters": {"size": 10, "hold": 60}})
    members.append({"command_type": "Big", "parameters": {"size": 50}})
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands/batch", json={"commands": members, "mode": "sequential"}
    )
    assert resp.status == 202, await resp.text()
    ids = [c["command_id"] for c in (await resp.json())["commands"]]
    runner = app_client.server.app[BUS].commands.runner

    def holding():
        job = runner.jobs.get(ids[3])
        return job if job is not None and job.state == "running" else None

    held = await eventually(holding, timeout=60)
    finished = [j for j in held.batch.jobs if j.record.command_id in ids[:3]]
    assert [j.record.status for j in finished] == ["completed"] * 3
    assert [j.record.result is None for j in finished] == [True] * 3
    # A wait on a finished member, and on one still to run, answers with its result all the same.
    for cid in ids[:3]:
        got = await (await app_client.get(f"/api/sessions/{sid}/commands/{cid}?wait=5")).json()
        assert got["status"] == "completed" and got["result"] == "x" * size, got["status"]
    later = asyncio.ensure_future(app_client.get(f"/api/sessions/{sid}/commands/{ids[4]}?wait=60"))
    await eventually(lambda: runner.jobs[ids[4]].waiter is not None)
    assert (await app_client.post(f"/api/sessions/{sid}/commands/{ids[3]}/cancel")).status == 200
    got = await (await later).json()
    assert got["status"] == "completed" and got["result"] == "x" * 50, got
