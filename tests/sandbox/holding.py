"""One session's call that holds something (a kernel resource, its worker) while another
session's calls run on the other worker: the shape of the tests that check one session's user
code cannot reach another's (tests/sandbox/test_fd_passing.py, test_worker_uids.py).

The holding tool publishes a ``Holding`` event once it holds, then ``Tick`` events until its
session is ended (``bus.publish`` fails then) and returns what it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import create_session
from tests.eventually import eventually

# The end of a holding tool: publish that it holds, then wait until its session is ended.
HOLD_UNTIL_ENDED = """
    await bus.publish("Holding", {})
    for _ in range(600):
        try:
            await bus.publish("Tick", {})
        except Exception:
            break  # the session was ended
        time.sleep(0.1)
"""


async def while_held(
    client: Any, hold: tuple[str, str], other: tuple[str, str], during: Callable[[str], Awaitable[Any]]
) -> tuple[dict[str, Any], Any]:
    """Register ``hold`` (name, code) in one session and ``other`` in another, run ``hold``,
    and once it holds, ``during(other_session_id)``; then end the holding session. Returns the
    holding call's answer and what ``during`` returned."""
    a = (await create_session(client))["session_id"]
    b = (await create_session(client))["session_id"]
    for sid, (name, code) in [(a, hold), (b, other)]:
        resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": name, "function_code": code})
        assert resp.status == 201, await resp.text()
    holding = asyncio.ensure_future(
        client.post(f"/api/sessions/{a}/tools/{hold[0]}/execute", json={"arguments": {}, "timeout": 60})
    )

    async def held() -> bool:
        resp = await client.get(f"/api/sessions/{a}/events", params={"event_type": "Holding"})
        return bool((await resp.json())["events"]) or holding.done()

    try:
        await eventually(held, timeout=30)
        assert not holding.done(), await (await holding).text()
        seen = await during(b)
    finally:
        await client.delete(f"/api/sessions/{a}")
        held_out = await (await holding).json()
    return held_out, seen
