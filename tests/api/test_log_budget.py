"""One session's user code cannot flush everyone's logs out: its ``bus.log`` records have a
budget per minute (``security.limits.session_log_records``) and its stored records a cap
(``security.limits.session_log_rows``), so it pushes out only its own."""

from __future__ import annotations

import os
from typing import Any

from llmgine_daemon.api.keys import BUS, OBSERVABILITY

from tests.api.test_observability import get_json
from tests.conftest import create_session
from tests.eventually import eventually


async def _tool(client: Any, sid: str, lines: int, word: str) -> None:
    code = f"def say(n: int = {lines}):\n    for i in range(n):\n        bus.log('info', f'{word} {{i}}')\n"
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "say", "function_code": code})
    assert resp.status == 201, await resp.text()


async def _say(client: Any, sid: str, n: int | None = None) -> None:
    arguments = {} if n is None else {"n": n}
    resp = await client.post(f"/api/sessions/{sid}/tools/say/execute", json={"arguments": arguments})
    out = await resp.json()
    assert resp.status == 200 and out["error"] is None, out


async def _messages(client: Any, sid: str, q: str) -> list[str]:
    logs = (await get_json(client, f"/api/observability/logs?session_id={sid}&q={q}&limit=1000"))["logs"]
    return [r["message"] for r in logs]


async def test_a_flooding_session_pushes_out_only_its_own_stored_records(make_client):
    client = await make_client(LLMGINE_LOG_RETENTION_ROWS="150", LLMGINE_SESSION_LOG_ROWS="20")
    victim = (await create_session(client))["session_id"]
    attacker = (await create_session(client))["session_id"]
    await _tool(client, victim, 5, "victim")
    await _tool(client, attacker, 300, "flood")
    await _say(client, victim)
    assert len(await _messages(client, victim, "victim")) == 5
    for _ in range(2):
        await _say(client, attacker)
    kept = await _messages(client, attacker, "flood")
    # Its newest 20 (plus at most a tenth more, trimmed once per tenth written).
    assert 20 <= len(kept) <= 21 and kept[-1] == "flood 299", kept
    assert await _messages(client, victim, "victim") == [f"victim {i}" for i in range(5)]


async def test_bus_log_has_a_budget_per_session_and_minute(make_client):
    client = await make_client(LLMGINE_SESSION_LOG_RECORDS="10")
    now = [1000.0]
    client.server.app[BUS].sandbox_bridge.log_window.clock = lambda: now[0]
    victim = (await create_session(client))["session_id"]
    attacker = (await create_session(client))["session_id"]
    await _tool(client, victim, 5, "victim")
    await _tool(client, attacker, 30, "flood")
    await _say(client, attacker)  # 30 records in one call (within the call's own budget) ...
    await _say(client, attacker, 5)  # ... and 5 in the next
    assert await _messages(client, attacker, "flood") == [f"flood {i}" for i in range(10)]
    [marker] = await _messages(client, attacker, "budget")
    assert "budget of 10 records a minute (security.limits.session_log_records)" in marker
    await _say(client, victim)  # another session has its own budget
    assert len(await _messages(client, victim, "victim")) == 5

    now[0] += 61  # the minute is over: the next bus.log (anyone's) reports the count
    await _say(client, victim)

    async def counted() -> bool:
        return await _messages(client, attacker, "session%20dropped") == [
            "bus.log: 25 records of this session dropped (over security.limits.session_log_records, 10 a minute)"
        ]

    await eventually(counted, message="the dropped records counted in the attacker's session")
    await _say(client, attacker, 3)  # a new minute, a new budget
    assert len(await _messages(client, attacker, "flood")) == 13


async def _span_sessions(client: Any) -> dict[str | None, int]:
    await client.app[OBSERVABILITY].flush()
    rows = await client.app[OBSERVABILITY].telemetry.read(
        lambda conn: conn.execute("SELECT session_id, COUNT(*) FROM spans GROUP BY session_id").fetchall()
    )
    return {row[0]: row[1] for row in rows}


async def test_a_session_tracing_every_request_pushes_out_only_its_own_spans(make_client):
    """A ``traceparent`` with the sampled flag is always stored (so is a failed span): a
    session token sending one with each of its 1,000 requests a minute stored a span for
    each, and within two hours the table's retention (observability.trace_retention_spans,
    100,000) had pushed out every other session's traces. Its own oldest go first now."""
    client = await make_client(LLMGINE_TRACE_RETENTION_SPANS="150", LLMGINE_SESSION_SPAN_ROWS="20")
    victim = await create_session(client)
    attacker = await create_session(client)
    for who, n in ((victim, 5), (attacker, 300)):
        token = {"X-Session-Token": who["session_token"]}
        for _ in range(n):
            sampled = {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01", **token}
            resp = await client.get(f"/api/sessions/{who['session_id']}", headers=sampled)
            assert resp.status == 200, await resp.text()
    counts = await _span_sessions(client)
    assert counts.get(victim["session_id"], 0) >= 5, counts
    assert counts[attacker["session_id"]] <= 20 + 2, counts  # trimmed every tenth of the cap
