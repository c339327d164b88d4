"""Dependencies: `after: [command_id...]` keeps a command `blocked` until they ended (#20)."""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import (
    BLOCK_MS,
    DUMMY,
    cancel,
    events,
    finished,
    session_with_engine,
    submit,
    token_session_with_engine,
)
from tests.conftest import assert_envelope


async def submit_after(
    client: Any,
    sid: str,
    after: list[str],
    prompt: str = "next",
    *,
    policy: str | None = None,
    expect: int = 202,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"command_type": DUMMY, "parameters": {"prompt": prompt, **params}, "after": after}
    if policy:
        body["after_policy"] = policy
    resp = await client.post(f"/api/sessions/{sid}/commands", json=body, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def test_blocked_until_a_command_of_another_session_completes(app_client):
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    first = await submit(app_client, a, "first", delay_ms=BLOCK_MS)
    then = await submit_after(app_client, b, [first["command_id"]])
    assert then["status"] == "blocked"
    view = await (await app_client.get("/api/commands", params={"status": "blocked"})).json()
    assert [c["command_id"] for c in view["commands"]] == [then["command_id"]]
    listed = await (await app_client.get(f"/api/sessions/{b}/commands", params={"status": "blocked"})).json()
    assert [c["command_id"] for c in listed["commands"]] == [then["command_id"]]
    # Its session is idle, yet it does not run while `first` runs.
    other = await submit(app_client, b, "independent", wait=30)
    assert other["status"] == "completed"
    assert (await (await app_client.get(f"/api/sessions/{b}/commands/{then['command_id']}")).json())[
        "status"
    ] == "blocked"
    await cancel(app_client, a, first["command_id"])
    ended = await finished(app_client, b, then["command_id"])
    assert ended["status"] == "cancelled"
    assert ended["error"]["details"]["reason"] == "dependency_failed"
    assert ended["error"]["details"]["dependency"] == first["command_id"]


async def test_runs_once_all_completed_and_failure_travels_down_the_chain(app_client):
    sid, _ = await session_with_engine(app_client)
    # Every dependency waits in the queue behind a blocker until the chain is submitted, and
    # is let go by cancelling the blocker: with dependencies that merely ran for a while, a
    # loaded machine had them done before the next submission (no CommandBlocked, or a child
    # cancelled at once).
    blocker = await submit(app_client, sid, "blocker", delay_ms=BLOCK_MS)
    one = await submit(app_client, sid, "one")
    two = await submit(app_client, sid, "two")
    three = await submit_after(app_client, sid, [one["command_id"], two["command_id"]])
    assert three["status"] == "blocked", three
    await cancel(app_client, sid, blocker["command_id"])
    done = await finished(app_client, sid, three["command_id"])
    assert done["status"] == "completed"
    types = [e["event_type"] for e in await events(app_client, sid, event_type="Command*")]
    assert "CommandBlocked" in types and "CommandQueued" in types
    # A failed dependency cancels the chain, unless after_policy is always.
    blocker = await submit(app_client, sid, "blocker", delay_ms=BLOCK_MS)
    bad = await submit(app_client, sid, "bad", fail=True)
    child = await submit_after(app_client, sid, [bad["command_id"]])
    grandchild = await submit_after(app_client, sid, [child["command_id"]])
    anyway = await submit_after(app_client, sid, [bad["command_id"]], policy="always")
    assert {child["status"], grandchild["status"], anyway["status"]} == {"blocked"}
    await cancel(app_client, sid, blocker["command_id"])
    assert (await finished(app_client, sid, grandchild["command_id"]))["status"] == "cancelled"
    assert (await finished(app_client, sid, child["command_id"]))["error"]["details"]["dependency_status"] == "failed"
    assert (await finished(app_client, sid, anyway["command_id"]))["status"] == "completed"
    # A dependency that already ended decides at once.
    late = await submit_after(app_client, sid, [one["command_id"]])
    assert (await finished(app_client, sid, late["command_id"]))["status"] == "completed"


async def test_refusals(app_client):
    sid, _ = await session_with_engine(app_client)
    error = assert_envelope(await submit_after(app_client, sid, ["nope"], expect=404), "COMMAND_NOT_FOUND")
    assert error["details"]["command_ids"] == ["nope"]
    assert_envelope(await submit_after(app_client, sid, ["x"], policy="sometimes", expect=422), "VALIDATION_ERROR")
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands/batch", json={"commands": [{"command_type": DUMMY, "after": ["x"]}]}
    )
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert resp.status == 422


async def test_cancel_a_blocked_command_and_session_end(app_client):
    sid, _ = await session_with_engine(app_client)
    first = await submit(app_client, sid, "first", delay_ms=BLOCK_MS)
    blocked = await submit_after(app_client, sid, [first["command_id"]])
    cancelled = await cancel(app_client, sid, blocked["command_id"])
    assert cancelled["status"] == "cancelled"
    await cancel(app_client, sid, blocked["command_id"], expect=409)
    # A session's end cancels its blocked commands, and what waits for its queued ones.
    other, _ = await session_with_engine(app_client)
    queued = await submit(app_client, sid, "queued", delay_ms=10)
    mine = await submit_after(app_client, sid, [first["command_id"]])
    theirs = await submit_after(app_client, other, [queued["command_id"]])
    assert (await app_client.delete(f"/api/sessions/{sid}")).status == 200
    assert (await finished(app_client, sid, mine["command_id"]))["status"] == "cancelled"
    assert (await finished(app_client, other, theirs["command_id"]))["status"] == "cancelled"


async def test_a_session_token_may_name_only_its_own_commands(app_client):
    sid, as_token = await token_session_with_engine(app_client)
    other, _ = await session_with_engine(app_client)
    foreign = await submit(app_client, other, "theirs")
    own = await submit(app_client, sid, "mine")
    body = await submit_after(app_client, sid, [foreign["command_id"]], expect=404, headers=as_token)
    assert_envelope(body, "COMMAND_NOT_FOUND")
    ok = await submit_after(app_client, sid, [own["command_id"]], headers=as_token)
    assert (await finished(app_client, sid, ok["command_id"]))["status"] == "completed"


async def test_blocked_commands_survive_a_restart(make_client):
    client = await make_client()
    a, _ = await session_with_engine(client)
    first = await submit(client, a, "first", delay_ms=BLOCK_MS)
    queued = await submit(client, a, "queued", delay_ms=10)
    blocked = await submit_after(client, a, [queued["command_id"]])
    always = await submit_after(client, a, [first["command_id"]], policy="always")
    strict = await submit_after(client, a, [first["command_id"]])
    await client.close()  # first: interrupted; queued: resumes at the next start
    client = await make_client()
    assert (await finished(client, a, blocked["command_id"]))["status"] == "completed"
    assert (await finished(client, a, always["command_id"]))["status"] == "completed"
    ended = await finished(client, a, strict["command_id"])
    assert ended["status"] == "cancelled" and ended["error"]["details"]["dependency_status"] == "interrupted"


async def test_forged_command_events_neither_cancel_release_nor_drop_a_blocked_command(app_client):
    """Anyone may publish an event of any type (a session token in its own session, user code
    through bus.publish): a CommandResult or CommandQueued the daemon did not write must not
    decide another session's blocked command, nor count as a finished command."""
    a, _ = await session_with_engine(app_client)
    b, _ = await session_with_engine(app_client)
    attacker, as_attacker = await token_session_with_engine(app_client)
    first = await submit(app_client, a, "first", delay_ms=BLOCK_MS)
    then = await submit_after(app_client, b, [first["command_id"]])
    assert then["status"] == "blocked"
    before = (await (await app_client.get("/api/commands")).json())["finished_last_minute"]
    forged = [
        ("CommandResult", {"command_id": first["command_id"], "status": "failed"}),
        ("CommandResult", {"command_id": first["command_id"], "status": "completed"}),
        ("CommandQueued", {"command_id": then["command_id"]}),
        ("CommandResult", {"command_id": then["command_id"], "status": "completed"}),
    ]
    for event_type, data in forged:
        resp = await app_client.post(
            f"/api/sessions/{attacker}/events", json={"event_type": event_type, "data": data}, headers=as_attacker
        )
        assert resp.status == 201, await resp.text()
    after = (await (await app_client.get("/api/commands")).json())["finished_last_minute"]
    assert after == before
    # Only the real end decides: `first` cancelled, so `then` is cancelled for that reason.
    await cancel(app_client, a, first["command_id"])
    ended = await finished(app_client, b, then["command_id"])
    assert ended["status"] == "cancelled", ended
    assert ended["error"]["details"]["dependency_status"] == "cancelled", ended["error"]
