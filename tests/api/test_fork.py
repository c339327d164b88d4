"""Forking a session (bus/fork.py): a new session with the engines, their memory as it stood
at an event seq, the tools and handlers; the original untouched."""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import events
from tests.api.llm_helpers import MODELS, add_weather_tool, create_llm_engine, execute, messages
from tests.conftest import assert_envelope
from tests.fakes.provider import FakeProvider


async def fork(client: Any, sid: str, expect: int = 201, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/fork", json=body)
    assert resp.status == expect, await resp.text()
    return await resp.json()


def result_seq(evs: list[dict[str, Any]], command_id: str) -> int:
    return next(e["seq"] for e in evs if e["event_type"] == "CommandResult" and e["data"]["command_id"] == command_id)


async def test_a_fork_at_an_earlier_seq_continues_with_different_memory(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS["openai"], system_prompt="be brief")
    sid, eid = engine["session_id"], engine["engine_id"]
    await add_weather_tool(client, sid)
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/events",
        json={"event_type": "Ping", "handler_function": "def h(event):\n    pass\n"},
    )
    assert resp.status == 201, await resp.text()
    first = await execute(client, eid, "first")
    await execute(client, eid, "second")
    before = await events(client, sid)
    at = result_seq(before, first["command_id"])

    forked = await fork(client, sid, at_seq=at, name="try again")
    new_sid = forked["session"]["session_id"]
    assert forked["from_session_id"] == sid and forked["at_seq"] == at
    assert forked["session"]["name"] == "try again" and forked["session"]["session_token"]
    assert forked["tools"] == ["get_weather"] and forked["handlers"] == 1
    new_eid = forked["engines"][eid]
    assert new_eid != eid
    assert forked["session"]["counts"]["engines"] == 1 and forked["session"]["counts"]["tools"] == 1

    # Its memory is the first exchange only; the original keeps both.
    assert [m["content"] for m in await messages(client, new_eid)] == ["first", "echo: first"]
    assert len(await messages(client, eid)) == 4
    new_engine = await (await client.get(f"/api/engines/{new_eid}")).json()
    assert new_engine["configuration"] == {"system_prompt": "be brief"} and new_engine["session_id"] == new_sid

    # It continues from there: the model is sent the fork's history, not the original's.
    record = await execute(client, new_eid, "different")
    assert record["status"] == "completed", record
    sent = [m["content"] for m in fake.requests[-1].body["messages"]]
    assert sent == ["be brief", "first", "echo: first", "different"]
    assert [m["content"] for m in await messages(client, new_eid)][-2:] == ["different", "echo: different"]
    assert len(await messages(client, eid)) == 4

    # Its first event says where it came from; the original got no event at all.
    new_events = await events(client, new_sid)
    assert new_events[0]["event_type"] == "SessionForked"
    assert new_events[0]["data"] == {
        "from_session_id": sid,
        "at_seq": at,
        "name": "try again",
        "engines": {eid: new_eid},
        "tools": ["get_weather"],
        "handlers": 1,
    }
    assert len(await events(client, sid)) == len(before)
    tools = await (await client.get(f"/api/sessions/{new_sid}/tools")).json()
    assert [t["name"] for t in tools["tools"]] == ["get_weather"]

    # Default: now, with everything.
    now = await fork(client, sid)
    assert len(await messages(client, now["engines"][eid])) == 4


async def test_a_fork_before_a_reset_and_before_an_engine_existed(llm_client: Any, fake: FakeProvider) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS["anthropic"])
    sid, eid = engine["session_id"], engine["engine_id"]
    record = await execute(client, eid, "remember me")
    at = result_seq(await events(client, sid), record["command_id"])
    resp = await client.post(f"/api/engines/{eid}/reset")
    assert resp.status == 200, await resp.text()
    assert await messages(client, eid) == []
    later = await create_llm_engine(client, sid, engine_type="ToolChatEngine", model=MODELS["openai"])

    forked = await fork(client, sid, at_seq=at)
    assert list(forked["engines"]) == [eid]  # the ToolChat engine did not exist yet
    assert [m["content"] for m in await messages(client, forked["engines"][eid])] == [
        "remember me",
        "echo: remember me",
    ]
    now = await fork(client, sid)
    assert set(now["engines"]) == {eid, later["engine_id"]}
    assert await messages(client, now["engines"][eid]) == []


async def test_fork_refusals(llm_client: Any) -> None:
    client = await llm_client()
    engine = await create_llm_engine(client, model=MODELS["openai"])
    sid = engine["session_id"]
    # Past the newest event: now. Before the session began: its beginning, no engine yet.
    past = await fork(client, sid, at_seq=10**12)
    assert past["at_seq"] < 10**12 and len(past["engines"]) == 1
    first = (await events(client, sid))[0]["seq"]
    assert (await fork(client, sid, at_seq=first - 1))["engines"] == {}
    assert (await fork(client, sid, at_seq=float(first)))["at_seq"] == first  # 42.0 is an integer
    assert_envelope(await fork(client, sid, 422, at_seq=first + 0.5), "VALIDATION_ERROR")
    assert_envelope(await fork(client, sid, 422, at_seq="7"), "VALIDATION_ERROR")
    assert_envelope(await fork(client, sid, 422, at_seq=2**63), "VALIDATION_ERROR")
    assert_envelope(await fork(client, "0190a000-0000-7000-8000-000000000000", 404), "SESSION_NOT_FOUND")
    assert_envelope(await fork(client, sid, 422, bogus=1), "VALIDATION_ERROR")
    token = (await (await client.post(f"/api/sessions/{sid}/token")).json())["session_token"]
    auth = client.session.headers.pop("Authorization")
    try:
        resp = await client.post(f"/api/sessions/{sid}/fork", json={}, headers={"X-Session-Token": token})
        assert resp.status == 403
        assert_envelope(await resp.json(), "FORBIDDEN")
    finally:
        client.session.headers["Authorization"] = auth


async def test_a_fork_may_refuse_a_name_an_active_session_has(app_client: Any) -> None:
    # ?if_exists=error (`session fork --name X`, as `session create --name X`): a fork named as
    # an active session made `-S X` ambiguous. Nothing of the fork is left behind (no session,
    # no token); without the parameter the name is taken as before.
    sid = (await (await app_client.post("/api/sessions", json={"name": "orig"})).json())["session_id"]
    resp = await app_client.post(f"/api/sessions/{sid}/fork?if_exists=error", json={"name": "orig"})
    assert resp.status == 409
    assert assert_envelope(await resp.json(), "CONFLICT")["details"]["session_id"] == sid
    listed = (await (await app_client.get("/api/sessions")).json())["sessions"]
    assert [s["session_id"] for s in listed] == [sid]
    resp = await app_client.post(f"/api/sessions/{sid}/fork?if_exists=error", json={"name": "other"})
    assert resp.status == 201, await resp.text()
    resp = await app_client.post(f"/api/sessions/{sid}/fork", json={"name": "orig"})
    assert resp.status == 201, await resp.text()


async def test_forks_without_a_name_at_the_same_point_get_distinct_names(app_client: Any) -> None:
    # Two forks at one seq were both "orig (fork at N)": `-S` by that name was ambiguous.
    sid = (await (await app_client.post("/api/sessions", json={"name": "orig"})).json())["session_id"]
    names = [(await fork(app_client, sid, at_seq=1))["session"]["name"] for _ in range(3)]
    seq = names[0].rsplit(" ", 1)[1].rstrip(")")
    assert names == [f"orig (fork at {seq})", f"orig (fork at {seq}, 2)", f"orig (fork at {seq}, 3)"]
    # A name given is taken as it is, as before.
    assert (await fork(app_client, sid, at_seq=1, name=names[0]))["session"]["name"] == names[0]


async def test_forks_without_a_name_sent_at_once_get_distinct_names(app_client: Any) -> None:
    # The default name was chosen by a read before the fork's write: forks sent together all
    # read the same names taken and were all "orig (fork at 1)".
    import asyncio

    sid = (await (await app_client.post("/api/sessions", json={"name": "orig"})).json())["session_id"]
    forks = await asyncio.gather(*(fork(app_client, sid, at_seq=1) for _ in range(4)))
    names = sorted(f["session"]["name"] for f in forks)
    assert names == sorted(["orig (fork at 1)", "orig (fork at 1, 2)", "orig (fork at 1, 3)", "orig (fork at 1, 4)"])
    # The first event says the name too, and the listing agrees with the answers.
    listed = (await (await app_client.get("/api/sessions")).json())["sessions"]
    assert sorted(s["name"] for s in listed if s["session_id"] != sid) == names
    for f in forks:
        first = (await (await app_client.get(f"/api/sessions/{f['session']['session_id']}/events")).json())["events"][0]
        assert first["data"]["name"] == f["session"]["name"]
