"""security.limits.max_engine_memory_per_session: the characters of a session's LLM
engines' conversation rows, those trimmed or reset (kept for forks) included (engines/memory.py,
migration 138). A session token's long prompts, repeated, grew the database for good: trimming
and reset keep the rows, and the prompt is in no event, so max_event_bytes_per_session never
saw them. On the fake provider (tests/fakes/provider.py), on both backends."""

from __future__ import annotations

import sqlite3
from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.api.llm_helpers import create_llm_engine
from tests.api.test_fork import fork
from tests.api.test_llm_engines import messages
from tests.fakes.provider import FakeProvider

PROMPT = 5_000
BUDGET = 40_000


async def stored(client: Any, sid: str) -> tuple[int, int]:
    """(characters of every row the session's engines keep, their engines' memory_chars)."""

    def read(conn: sqlite3.Connection) -> tuple[int, int]:
        rows = conn.execute(
            "SELECT COALESCE(SUM(length(content) + COALESCE(length(tool_calls), 0)), 0) FROM engine_messages"
            " WHERE engine_id IN (SELECT engine_id FROM engines WHERE session_id = ?)",
            (sid,),
        ).fetchone()[0]
        counted = conn.execute(
            "SELECT COALESCE(SUM(memory_chars), 0) FROM engines WHERE session_id = ?", (sid,)
        ).fetchone()[0]
        return int(rows), int(counted)

    result: tuple[int, int] = await client.server.app[BUS].store.read(read)
    return result


async def turn(client: Any, engine_id: str, prompt: str, headers: dict[str, str]) -> None:
    resp = await client.post(
        f"/api/engines/{engine_id}/execute", params={"wait": "30"}, json={"prompt": prompt}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "completed"


async def test_a_session_tokens_prompts_stay_within_the_budget(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client(LLMGINE_MAX_ENGINE_MEMORY_PER_SESSION=str(BUDGET))
    engine = await create_llm_engine(client, memory_max_chars=1_000)
    sid, eid = engine["session_id"], engine["engine_id"]
    token = (await (await client.post(f"/api/sessions/{sid}/token")).json())["session_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(20):  # each turn: the prompt and its echo, about 10,000 characters
        await turn(client, eid, f"{n:02d}" + "p" * PROMPT, headers)
        if n == 3:
            early = max(e["seq"] for e in (await (await client.get(f"/api/sessions/{sid}/events")).json())["events"])
    rows, counted = await stored(client, sid)
    # Kept before: every turn's rows, trimmed or not (about 200,000 characters).
    assert rows == counted and rows <= BUDGET + 2 * (PROMPT + 10), rows
    # The conversation as the engine has it is the newest exchange, whole.
    current = await messages(client, eid)
    assert [m["content"][:2] for m in current] == ["19", "ec"]

    # A reset keeps its rows for forks: they count, and go first when the budget is passed.
    assert (await client.post(f"/api/engines/{eid}/reset", headers=headers)).status == 200
    await turn(client, eid, "after" + "q" * PROMPT, headers)
    rows, counted = await stored(client, sid)
    assert rows == counted and rows <= BUDGET + 2 * (PROMPT + 10), rows
    # A fork from an early seq whose rows are gone starts with what is left (none here); a
    # fork now has the engine's memory, counted in its own session.
    old = await fork(client, sid, at_seq=early)
    assert await messages(client, old["engines"][eid]) == []
    now = await fork(client, sid)
    new_sid = now["session"]["session_id"]
    assert [m["content"][:5] for m in await messages(client, now["engines"][eid])] == ["after", "echo:"]
    rows, counted = await stored(client, new_sid)
    assert rows == counted == 2 * len("after" + "q" * PROMPT) + len("echo: ")


async def test_an_engines_own_memory_is_trimmed_to_the_budget(llm_client: Any, fake: FakeProvider) -> None:
    # memory_max_chars may be up to 100,000,000: the budget trims the current memory too (its
    # rows deleted), keeping the newest exchange.
    client = await llm_client(LLMGINE_MAX_ENGINE_MEMORY_PER_SESSION=str(BUDGET))
    engine = await create_llm_engine(client, memory_max_chars=100_000_000, memory_max_messages=100_000)
    sid, eid = engine["session_id"], engine["engine_id"]
    second = await create_llm_engine(
        client, sid, engine_type="ToolChatEngine", memory_max_chars=100_000_000, memory_max_messages=100_000
    )
    for n in range(10):
        await turn(client, eid if n % 2 else second["engine_id"], f"{n:02d}" + "p" * PROMPT, {})
    rows, counted = await stored(client, sid)
    assert rows == counted and rows <= BUDGET + 2 * (PROMPT + 10), rows
    current = await messages(client, eid)
    assert current[-2]["content"][:2] == "09" and len(current) < 10
    # The engine's next turn sends the model the memory it kept.
    await turn(client, eid, "next", {})
    assert "09" + "p" * PROMPT in str(fake.requests[-1].body["messages"])
    # Deleting an engine frees its rows.
    assert (await client.delete(f"/api/engines/{second['engine_id']}")).status in (200, 204)
    rows, counted = await stored(client, sid)
    assert rows == counted
