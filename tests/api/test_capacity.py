"""Capacity limits are the bus's rules, checked inside the creating write: concurrent creations
against a maximum of N create exactly N, the others get 409 LIMIT_REACHED (never a 500)."""

from __future__ import annotations

import asyncio

from tests.api.secutil import bearer, new_session, start
from tests.conftest import assert_documented, assert_envelope


async def statuses_and_refusals(results) -> tuple[list[int], list[dict]]:
    refusals = [assert_envelope(await r.json(), "LIMIT_REACHED") for r in results if r.status == 409]
    return [r.status for r in results], refusals


async def test_concurrent_sessions_stop_exactly_at_the_maximum(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_SESSIONS="4")
    results = await asyncio.gather(*(client.post("/api/sessions", json={}, headers=bearer(local)) for _ in range(12)))
    statuses, refusals = await statuses_and_refusals(results)
    assert sorted(statuses) == [201] * 4 + [409] * 8
    assert all(e["details"] == {"limit": "max_sessions", "max": 4} for e in refusals)
    assert refusals[0]["message"] == "limit reached: at most 4 active sessions (security.limits.max_sessions)"
    listed = await (await client.get("/api/sessions?status=active", headers=bearer(local))).json()
    assert listed["total"] == 4


async def test_concurrent_engines_stop_exactly_at_the_maximum(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_ENGINES_PER_SESSION="2")
    s = await new_session(client, local)
    types = await (await client.get("/api/engines/types", headers=bearer(local))).json()
    names = [t["engine_type"] for t in types["types"]]
    assert len(names) >= 3  # one engine per type in a session: three types to race
    results = await asyncio.gather(
        *(
            client.post(
                "/api/engines", json={"engine_type": name, "session_id": s["session_id"]}, headers=bearer(local)
            )
            for name in names
        )
    )
    statuses, refusals = await statuses_and_refusals(results)
    assert statuses.count(201) == 2 and statuses.count(409) == len(names) - 2, statuses
    assert all(e["details"] == {"limit": "max_engines_per_session", "max": 2} for e in refusals)
    listed = await (await client.get(f"/api/engines?session_id={s['session_id']}", headers=bearer(local))).json()
    assert listed["total"] == 2
    # Deleting one makes room again.
    engine_id = listed["engines"][0]["engine_id"]
    assert (await client.delete(f"/api/engines/{engine_id}", headers=bearer(local))).status == 200
    again = next(n for n in names if n not in {e["engine_type"] for e in listed["engines"][1:]})
    resp = await client.post(
        "/api/engines", json={"engine_type": again, "session_id": s["session_id"]}, headers=bearer(local)
    )
    assert resp.status == 201, await resp.text()


async def test_concurrent_tools_stop_exactly_at_the_maximum(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_TOOLS_PER_SESSION="3")
    s = await new_session(client, local)
    path = f"/api/sessions/{s['session_id']}/tools"

    def tool(name: str) -> dict:
        return {"name": name, "function_code": f"def {name}():\n    return 1\n"}

    results = await asyncio.gather(*(client.post(path, json=tool(f"t{i}"), headers=bearer(local)) for i in range(8)))
    statuses, refusals = await statuses_and_refusals(results)
    assert sorted(statuses) == [201] * 3 + [409] * 5, statuses
    assert all(e["details"] == {"limit": "max_tools_per_session", "max": 3} for e in refusals)
    listed = await (await client.get(path, headers=bearer(local))).json()
    assert listed["total"] == 3
    # Re-registering a name the session has replaces it: no new tool, so no refusal.
    kept = listed["tools"][0]["name"]
    resp = await client.post(f"{path}?replace=true", json=tool(kept), headers=bearer(local))
    assert resp.status == 201, await resp.text()


async def test_concurrent_handlers_stop_exactly_at_the_maximum(aiohttp_client, make_settings):
    """Handlers had no limit: a session (a token, where it may register code) registered
    them at some sixty a second, each keeping up to 256 KiB of code in the daemon's memory,
    and every event of every session looked at all of them."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_HANDLERS_PER_SESSION="3")
    s = await new_session(client, local)
    base = f"/api/sessions/{s['session_id']}/handlers"
    code = "def h(x):\n    return 1\n"
    results = await asyncio.gather(
        *(
            client.post(f"{base}/events", json={"event_type": f"E{i}", "handler_function": code}, headers=bearer(local))
            for i in range(6)
        ),
        client.post(f"{base}/commands", json={"command_type": "C", "handler_function": code}, headers=bearer(local)),
    )
    statuses, refusals = await statuses_and_refusals(results)
    assert sorted(statuses) == [201] * 3 + [409] * 4, statuses
    assert all(e["details"] == {"limit": "max_handlers_per_session", "max": 3} for e in refusals)
    for kind in ("commands", "events"):  # the document listed no LIMIT_REACHED for them
        await assert_documented(
            client, "POST", f"/api/sessions/{{session_id}}/handlers/{kind}", 409, "LIMIT_REACHED", bearer(local)
        )
    listed = await (await client.get(base, headers=bearer(local))).json()
    assert listed["total"] == 3
    # Deleting one makes room for one again; global handlers (full access only) do not count.
    gone = listed["handlers"][0]
    resp = await client.delete(f"{base}/{gone['kind']}s/{gone['type']}", headers=bearer(local))
    assert resp.status in (200, 204), await resp.text()
    for expected in (201, 409):
        resp = await client.post(
            f"{base}/events", json={"event_type": "Again", "handler_function": code}, headers=bearer(local)
        )
        assert resp.status == expected, await resp.text()
    resp = await client.post(
        "/api/handlers/events", json={"event_type": "G", "handler_function": code}, headers=bearer(local)
    )
    assert resp.status == 201, await resp.text()


async def dummy_session(client, local) -> tuple[str, dict[str, str], str]:
    """A new session with a DummyEngine: its id, its token's header, its commands' path."""
    s = await new_session(client, local)
    sid, token = s["session_id"], {"X-Session-Token": s["session_token"]}
    engine = {"engine_type": "DummyEngine", "session_id": sid}
    assert (await client.post("/api/engines", json=engine, headers=token)).status == 201
    return sid, token, f"/api/sessions/{sid}/commands"


async def test_unfinished_commands_stop_at_the_maximum(aiohttp_client, make_settings):
    """Every unfinished command is kept in memory with its parameters (up to a request body
    each): a session token queued them behind a slow one without limit (200 commands of 900 KB
    grew the daemon by 190 MB). Queued, blocked and executing ones count, a batch one per 100
    of its commands, and a rerun as many as it queues again."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_PENDING_COMMANDS_PER_SESSION="4")
    sid, token, path = await dummy_session(client, local)

    def cmd(**parameters: object) -> dict:
        return {"command_type": "DummyEngineCommand", "parameters": {"prompt": "p", **parameters}}

    slow = await client.post(f"{path}?wait=0", json=cmd(delay_ms=600_000), headers=token)
    assert slow.status == 202, await slow.text()
    slow_id = (await slow.json())["command_id"]
    results = await asyncio.gather(*(client.post(f"{path}?wait=0", json=cmd(), headers=token) for _ in range(6)))
    statuses, refusals = await statuses_and_refusals(results)
    assert sorted(statuses) == [202] * 3 + [409] * 3, statuses
    assert all(e["details"] == {"limit": "max_pending_commands_per_session", "max": 4} for e in refusals)
    queued = [(await r.json())["command_id"] for r in results if r.status == 202]
    # Full: a batch and a command waiting for another are refused too.
    batch = {"commands": [cmd(), cmd(), cmd()]}
    assert (await client.post(f"{path}/batch?wait=0", json=batch, headers=token)).status == 409
    after = {**cmd(), "after": [slow_id]}
    assert (await client.post(f"{path}?wait=0", json=after, headers=token)).status == 409
    # A cancelled one makes room for one: a batch of up to 100 commands (one body; each command
    # is a record in memory too: 10,000 small ones held 15 MB), not of 101.
    assert (await client.post(f"{path}/{queued[0]}/cancel", headers=token)).status == 200
    large = {"commands": [cmd() for _ in range(101)]}
    assert (await client.post(f"{path}/batch?wait=0", json=large, headers=token)).status == 409
    resp = await client.post(f"{path}/batch?wait=0", json=batch, headers=token)
    assert resp.status == 202, await resp.text()
    assert (await client.post(f"{path}?wait=0", json=cmd(), headers=token)).status == 409
    assert (await client.post(f"{path}/{slow_id}/cancel", headers=token)).status == 200
    # Ended commands leave room; queuing five failed ones again at once would go past it.
    for _ in range(5):
        resp = await client.post(f"{path}?wait=30", json=cmd(fail=True), headers=token)
        assert resp.status == 200 and (await resp.json())["status"] == "failed", await resp.text()
    resp = await client.post(f"{path}/retry", json={"failed": True}, headers=token)
    assert resp.status == 409, await resp.text()
    assert_envelope(await resp.json(), "LIMIT_REACHED")


async def test_a_sessions_event_bytes_stop_at_the_maximum(aiohttp_client, make_settings):
    """A session token could store events without bound (about 1 GB a minute at its rate limit,
    and retention is off by default). The bytes of a session's events are counted by the
    writes that insert and delete them, and an event published past
    security.limits.max_event_bytes_per_session is refused (409, never stored, never a 500)."""
    from llmgine_daemon.api.keys import BUS

    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_EVENT_BYTES_PER_SESSION="50000")
    s, other = await new_session(client, local), await new_session(client, local)
    sid, token = s["session_id"], {"X-Session-Token": s["session_token"]}
    store = client.app[BUS].store

    # UTF-8 bytes, not characters: `length` of a TEXT counts characters (a "€" is 3 bytes).
    octets = "octet_length({})" if type(store).__name__ == "PgStore" else "length(CAST({} AS BLOB))"
    recount_sql = (
        f"SELECT COALESCE(SUM({octets.format('data')} + {octets.format('metadata')}), 0) FROM events"
        " WHERE session_id = ?"
    )

    async def counted(session_id: str) -> tuple[int, int]:
        """The running count and a recount of the session's event bytes."""
        return await store.read(
            lambda conn: (
                conn.execute("SELECT event_bytes FROM session_counts WHERE session_id = ?", (session_id,)).fetchone()[
                    0
                ],
                conn.execute(recount_sql, (session_id,)).fetchone()[0],
            )
        )

    used, recount = await counted(sid)
    assert used == recount > 0  # its SessionCreated, say
    body = {"event_type": "Big", "data": {"b": "\u20ac" * 3000}}  # 3,000 characters, 9,000 bytes
    size = len('{"b":""}') + 9000 + len("{}")
    results = await asyncio.gather(
        *(client.post(f"/api/sessions/{sid}/events", json=body, headers=token) for _ in range(10))
    )
    statuses, refusals = await statuses_and_refusals(results)
    fits = (50000 - used) // size
    assert statuses.count(201) == fits and statuses.count(409) == 10 - fits, statuses
    assert all(e["details"] == {"limit": "max_event_bytes_per_session", "max": 50000} for e in refusals)
    await assert_documented(client, "POST", "/api/sessions/{session_id}/events", 409, "LIMIT_REACHED", token)
    base = used
    used, recount = await counted(sid)
    assert used == recount == base + fits * size
    listed = await (await client.get(f"/api/sessions/{sid}/events?event_type=Big", headers=token)).json()
    assert listed["total"] == fits
    # Another session has its own.
    resp = await client.post(f"/api/sessions/{other['session_id']}/events", json=body, headers=bearer(local))
    assert resp.status == 201
    # Deleting events (retention, a purge) frees their bytes: the triggers count them out.
    await store.write(
        lambda conn: conn.execute("DELETE FROM events WHERE session_id = ? AND event_type = 'Big'", (sid,))
    )
    used, recount = await counted(sid)
    assert used == recount and used < 50000 - size
    resp = await client.post(f"/api/sessions/{sid}/events", json=body, headers=token)
    assert resp.status == 201, await resp.text()


async def test_user_code_publishes_within_the_event_bytes_the_bus_records_past_them(aiohttp_client, make_settings):
    """User code's ``bus.publish`` is held to security.limits.max_event_bytes_per_session as a
    client's publish is; the bus's own records of the command (its result) are kept."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_EVENT_BYTES_PER_SESSION="100000")
    sid = (await new_session(client, local))["session_id"]
    code = (
        "async def fill(command):\n"
        "    n = 0\n"
        "    try:\n"
        "        while n < 100:\n"
        "            await bus.publish('Blob', {'b': 'x' * 20000})\n"
        "            n += 1\n"
        "    except Exception as exc:\n"
        "        return {'published': n, 'error': str(exc)}\n"
        "    return {'published': n}\n"
    )
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/commands",
        json={"command_type": "Fill", "handler_function": code},
        headers=bearer(local),
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/api/sessions/{sid}/commands?wait=60", json={"command_type": "Fill", "parameters": {}}, headers=bearer(local)
    )
    record = await resp.json()
    assert resp.status == 200 and record["status"] == "completed", record
    assert record["result"]["published"] == 4 and "max_event_bytes_per_session" in record["result"]["error"]
    listed = await (await client.get(f"/api/sessions/{sid}/events?event_type=Command*", headers=bearer(local))).json()
    assert [e["event_type"] for e in listed["events"]][-1] == "CommandResult"


async def test_new_work_is_refused_at_the_door_once_the_event_bytes_are_spent(aiohttp_client, make_settings):
    """A command's own events (CommandStarted with its parameters, its result) and a tool
    call's ToolExecuted are the bus's records and never refused: commands with large
    parameters filled the disk past max_event_bytes_per_session. Once a session's events reach
    it, new commands, batches and tool calls of its own are 409 LIMIT_REACHED; another
    session is not held."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_EVENT_BYTES_PER_SESSION="30000")
    s, other = await new_session(client, local), await new_session(client, local)
    sid, token = s["session_id"], {"X-Session-Token": s["session_token"]}
    for session in (sid, other["session_id"]):
        resp = await client.post(
            "/api/engines", json={"engine_type": "DummyEngine", "session_id": session}, headers=bearer(local)
        )
        assert resp.status == 201, await resp.text()
    big = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "x" * 12000}}
    statuses = []
    for _ in range(6):
        resp = await client.post(f"/api/sessions/{sid}/commands?wait=30", json=big, headers=token)
        statuses.append(resp.status)
        if resp.status == 409:
            refusal = assert_envelope(await resp.json(), "LIMIT_REACHED")
            assert refusal["details"] == {"limit": "max_event_bytes_per_session", "max": 30000}
    # Each command stores its prompt (CommandStarted's parameters, the engine's events): a
    # command let in under the budget may pass it, every one after that is refused.
    admitted = statuses.count(200)
    assert 1 <= admitted <= 3 and statuses == [200] * admitted + [409] * (6 - admitted), statuses
    batch = {"commands": [{"command_type": "DummyEngineCommand", "parameters": {"prompt": "y"}}]}
    resp = await client.post(f"/api/sessions/{sid}/commands/batch", json=batch, headers=token)
    assert resp.status == 409 and assert_envelope(await resp.json(), "LIMIT_REACHED")
    tool = {
        "name": "add",
        "description": "add",
        "parameters": {},
        "function_code": "def add(a, b):\n    return a + b\n",
    }
    resp = await client.post(f"/api/sessions/{sid}/tools", json=tool, headers=bearer(local))
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/api/sessions/{sid}/tools/add/execute", json={"arguments": {"a": 1, "b": 2}}, headers=token
    )
    assert resp.status == 409 and assert_envelope(await resp.json(), "LIMIT_REACHED")
    resp = await client.post(f"/api/sessions/{other['session_id']}/commands?wait=30", json=big, headers=bearer(local))
    assert resp.status == 200, await resp.text()


async def test_a_sessions_commands_in_memory_stop_at_their_bytes(aiohttp_client, make_settings):
    """Each unfinished command is kept in the daemon's memory with its parameters, as Python
    objects several times their size: 1,000 queued commands of 1 MiB each were about 7 GB from
    one session token. security.limits.max_pending_bytes_per_session bounds the bytes of their
    parameters and metadata (as JSON) that a daemon keeps for one session: past it a command or
    a batch is refused (409), and ended commands give their room back."""
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_PENDING_BYTES_PER_SESSION="50000")
    sid, token, path = await dummy_session(client, local)

    def cmd(size: int = 1, **parameters: object) -> dict:
        return {"command_type": "DummyEngineCommand", "parameters": {"prompt": "p" * size, **parameters}}

    slow = await client.post(f"{path}?wait=0", json=cmd(delay_ms=600_000), headers=token)
    assert slow.status == 202, await slow.text()
    queued = []
    for _ in range(2):  # 2 x 20 kB queued behind it: under 50 kB
        resp = await client.post(f"{path}?wait=0", json=cmd(20_000), headers=token)
        assert resp.status == 202, await resp.text()
        queued.append((await resp.json())["command_id"])
    resp = await client.post(f"{path}?wait=0", json=cmd(20_000), headers=token)
    assert resp.status == 409, await resp.text()
    error = assert_envelope(await resp.json(), "LIMIT_REACHED")
    assert error["details"] == {"limit": "max_pending_bytes_per_session", "max": 50000}
    batch = {"commands": [cmd(4_000) for _ in range(3)]}
    assert (await client.post(f"{path}/batch?wait=0", json=batch, headers=token)).status == 409
    # Another session has its own budget.
    _, other_token, other_path = await dummy_session(client, local)
    resp = await client.post(f"{other_path}?wait=30", json=cmd(20_000), headers=other_token)
    assert resp.status == 200, await resp.text()
    # Ended commands leave room again.
    for command_id in [*queued, (await slow.json())["command_id"]]:
        assert (await client.post(f"{path}/{command_id}/cancel", headers=token)).status == 200
    resp = await client.post(f"{path}?wait=30", json=cmd(40_000), headers=token)
    assert resp.status == 200 and (await resp.json())["status"] == "completed", await resp.text()
    resp = await client.post(f"{path}/batch?wait=30", json=batch, headers=token)
    assert resp.status == 200, await resp.text()
