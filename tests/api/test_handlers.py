"""Spec section 6: user-code handlers, with real worker processes.

Events are published by a tool (``await bus.publish``), so these tests need nothing but the
sandbox; command handlers are tested with the command bus.
"""

from __future__ import annotations

import json
import textwrap

from llmgine_daemon.api.keys import BUS

from tests.conftest import assert_envelope, create_session
from tests.eventually import eventually

PUBLISH = textwrap.dedent("""
    async def publish(event_type: str, data: dict = {}):
        event = await bus.publish(event_type, data)
        return event["seq"]
""")


async def events_of(client, sid, prefix=""):
    rows = await client.server.app[BUS].store.fetchall(
        "SELECT event_type, data, source FROM events WHERE session_id = ? AND event_type LIKE ? ORDER BY seq",
        (sid, prefix + "%"),
    )
    return [(r[0], json.loads(r[1]), r[2]) for r in rows]


async def wait_for(client, sid, prefix, count, timeout=10.0):
    async def enough():
        found = await events_of(client, sid, prefix)
        return found if len(found) >= count else None

    return await eventually(enough, timeout, interval=0.05, message=f"{count} {prefix!r} events")


async def handlers_idle(client, sid):
    """Every event of ``sid`` stored so far has been through its event handlers (whatever they
    published included): the session's dispatcher has nothing left."""
    dispatchers = client.server.app[BUS].user_handlers._tasks
    await eventually(lambda: sid not in dispatchers, message=f"handlers of {sid} idle")


async def setup(client):
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "publish", "function_code": PUBLISH})
    assert resp.status == 201, await resp.text()
    return sid


async def publish(client, sid, event_type, data=None):
    out = await (
        await client.post(
            f"/api/sessions/{sid}/tools/publish/execute",
            json={"arguments": {"event_type": event_type, "data": data or {}}},
        )
    ).json()
    assert out["error"] is None, out
    return out


async def add_event_handler(client, sid, event_type, code, priority=100, scope=None):
    base = f"/api/sessions/{sid}/handlers" if scope is None else "/api/handlers"
    resp = await client.post(
        f"{base}/events",
        json={"event_type": event_type, "handler_function": textwrap.dedent(code), "priority": priority},
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_event_handler_publishes_another_event(app_client):
    sid = await setup(app_client)
    handler = await add_event_handler(
        app_client,
        sid,
        "OrderPlaced",
        """
        async def on_order(event):
            await bus.publish("OrderConfirmed", {"order": event.data["order"],
                                                 "seen_seq": event.seq})
    """,
    )
    assert handler["function"] == "on_order" and handler["scope"] == "session"
    await publish(app_client, sid, "OrderPlaced", {"order": 7})
    confirmed = await wait_for(app_client, sid, "OrderConfirmed", 1)
    assert confirmed[0][1]["order"] == 7 and confirmed[0][2] == "handler"
    placed = await events_of(app_client, sid, "OrderPlaced")
    assert len(placed) == 1


async def test_priorities_lowest_first(app_client):
    sid = await setup(app_client)
    for priority in (50, 10, 30):
        await add_event_handler(
            app_client,
            sid,
            "Tick",
            f"""
            async def h(event):
                await bus.publish("Ran", {{"priority": {priority}}})
        """,
            priority=priority,
        )
    await publish(app_client, sid, "Tick")
    ran = await wait_for(app_client, sid, "Ran", 3)
    assert [d["priority"] for _, d, _ in ran] == [10, 30, 50]


async def test_failing_handler_records_event_handler_failed(app_client):
    sid = await setup(app_client)
    handler = await add_event_handler(
        app_client,
        sid,
        "Boom",
        """
        def explode(event):
            raise ValueError("handler broke on " + event["event_type"])
    """,
    )
    await add_event_handler(
        app_client,
        sid,
        "Boom",
        """
        async def after(event):
            await bus.publish("StillRan", {})
    """,
        priority=200,
    )
    out = await publish(app_client, sid, "Boom")
    assert out["error"] is None  # the publisher never fails
    failed = await wait_for(app_client, sid, "EventHandlerFailed", 1)
    data = failed[0][1]
    assert data["handler_id"] == handler["handler_id"] and data["event_type"] == "Boom"
    assert data["error"]["details"]["type"] == "ValueError"
    assert "handler broke on Boom" in data["error"]["message"]
    await wait_for(app_client, sid, "StillRan", 1)


async def test_wildcard_and_global_handlers(app_client):
    sid = await setup(app_client)
    other = (await create_session(app_client))["session_id"]
    await app_client.post(f"/api/sessions/{other}/tools", json={"name": "publish", "function_code": PUBLISH})
    await add_event_handler(
        app_client,
        sid,
        "*",
        """
        async def every(event):
            if event.event_type.startswith("Seen"):
                return
            await bus.publish("SeenBySession", {"type": event.event_type})
    """,
    )
    glob = await add_event_handler(
        app_client,
        sid,
        "Ping",
        """
        async def everywhere(event):
            await bus.publish("SeenGlobally", {"session": event.session_id})
    """,
        scope="global",
    )
    assert glob["scope"] == "global" and glob["session_id"] is None
    await publish(app_client, sid, "Ping")
    await publish(app_client, other, "Ping")
    assert (await wait_for(app_client, sid, "SeenGlobally", 1))[0][1]["session"] == sid
    assert (await wait_for(app_client, other, "SeenGlobally", 1))[0][1]["session"] == other
    seen = await wait_for(app_client, sid, "SeenBySession", 2)
    assert {d["type"] for _, d, _ in seen} >= {"Ping", "ToolExecuted"}
    await handlers_idle(app_client, other)
    assert await events_of(app_client, other, "SeenBySession") == []

    listing = await (await app_client.get("/api/handlers")).json()
    assert [h["handler_id"] for h in listing["handlers"]] == [glob["handler_id"]]
    assert (await app_client.delete("/api/handlers/events/Ping")).status == 204
    resp = await app_client.delete("/api/handlers/events/Ping")
    assert resp.status == 404
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")


async def test_self_triggering_handler_stops_at_the_depth_limit(make_client):
    client = await make_client(LLMGINE_SANDBOX_MAX_DEPTH="3")
    sid = await setup(client)
    await add_event_handler(
        client,
        sid,
        "Echo",
        """
        async def echo(event):
            await bus.publish("Echo", {"n": event.data.get("n", 0) + 1})
    """,
    )
    await publish(client, sid, "Echo", {"n": 0})
    failed = await wait_for(client, sid, "EventHandlerFailed", 1)
    assert "depth limit" in failed[0][1]["error"]["message"]
    await handlers_idle(client, sid)
    echoes = await events_of(client, sid, "Echo")
    # The tool (depth 0) publishes at depth 1, each handler one deeper; the third is refused.
    assert [d["n"] for _, d, _ in echoes] == [0, 1, 2]


async def test_list_get_delete_and_validation(app_client):
    sid = await setup(app_client)
    base = f"/api/sessions/{sid}/handlers"
    ev = await add_event_handler(app_client, sid, "A", "def h(event):\n    pass\n")
    listing = await (await app_client.get(base)).json()
    assert listing["total"] == 1 and listing["handlers"][0]["kind"] == "event"
    one = await (await app_client.get(f"{base}/{ev['handler_id']}")).json()
    assert one["handler_function"] == "def h(event):\n    pass\n"
    resp = await app_client.post(f"{base}/events", json={"event_type": "A", "handler_function": "def h(:\n  pass"})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["line"] == 1
    resp = await app_client.post(f"{base}/events", json={"event_type": "A", "handler_function": "def h():\n  pass"})
    assert resp.status == 422
    resp = await app_client.post(f"{base}/events", json={"event_type": "A", "handler_function": "x = 1\n"})
    assert resp.status == 422
    assert (await app_client.delete(f"{base}/events/A")).status == 204
    resp = await app_client.delete(f"{base}/events/A")
    assert resp.status == 404
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")
    resp = await app_client.delete(f"{base}/commands/Nope")
    assert resp.status == 404


async def test_handlers_survive_restart(make_client):
    client = await make_client()
    sid = await setup(client)
    await add_event_handler(
        client,
        sid,
        "Later",
        """
        async def h(event):
            await bus.publish("Handled", {})
    """,
    )
    await client.close()
    client = await make_client()
    listing = await (await client.get(f"/api/sessions/{sid}/handlers")).json()
    assert listing["total"] == 1
    await publish(client, sid, "Later")
    await wait_for(client, sid, "Handled", 1)


async def test_a_type_with_a_slash_can_be_deleted(app_client):
    """Types are free text; the CLI sends one as a single encoded path segment (a%2Fb)."""
    from yarl import URL

    sid = await setup(app_client)
    await add_event_handler(app_client, sid, "orders/paid", "def h(event):\n    pass\n")
    path = URL(f"/api/sessions/{sid}/handlers/events/orders%2Fpaid", encoded=True)
    resp = await app_client.delete(path)
    assert resp.status == 204, await resp.text()
    listing = await (await app_client.get(f"/api/sessions/{sid}/handlers")).json()
    assert listing["total"] == 0


async def test_every_type_user_code_publishes_can_be_listed(app_client):
    """User code may publish any type of 1 to 128 characters, outside the API's type grammar;
    the event list filters by such types too (exact and as a prefix), as streams do."""
    sid = await setup(app_client)
    types = ["order placed", "orders/paid", "Zahlung ✓ eingegangen", "t" * 128]
    for event_type in types:
        await publish(app_client, sid, event_type)
    for event_type in types:
        resp = await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": event_type})
        assert resp.status == 200, await resp.text()
        assert [e["event_type"] for e in (await resp.json())["events"]] == [event_type]
    resp = await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": "order*"})
    assert [e["event_type"] for e in (await resp.json())["events"]] == ["order placed", "orders/paid"]


async def test_a_type_with_control_characters_is_refused_at_registration(app_client):
    """Deletion by path refuses what is not printable; so does registration, so every handler
    that exists can be deleted (and no escape sequence reaches a terminal listing them)."""
    sid = await setup(app_client)
    for bad in ("a\x01b", "x\x1b[31m", "two words"):
        resp = await app_client.post(
            f"/api/sessions/{sid}/handlers/events",
            json={"event_type": bad, "handler_function": "def h(event):\n    pass\n"},
        )
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["details"]["field"] == "event_type"


async def test_a_backlog_of_events_holds_not_their_data(app_client):
    """Events wait in their session's queue for a slow handler; the queue held each event whole,
    so a session token publishing large events faster than its handler ran grew the daemon
    without bound (200 events of 900 KB: +190 MB). It holds what picks the handlers; the
    handler still gets the whole event, read back from the store."""
    import msgspec

    sid = await setup(app_client)
    await add_event_handler(
        app_client,
        sid,
        "Big",
        """
        import time
        async def on_big(event):
            if event.data.get("slow"):
                time.sleep(3)
            await bus.publish("Saw", {"size": len(event.data["blob"]), "seq": event.seq})
    """,
    )
    blob = "x" * 200_000
    path = f"/api/sessions/{sid}/events"
    for n in range(21):
        data = {"blob": blob, "slow": n == 0}
        resp = await app_client.post(path, json={"event_type": "Big", "data": data})
        assert resp.status == 201, await resp.text()
    queues = app_client.server.app[BUS].user_handlers._queues
    backlog = await eventually(lambda: len(queues.get(sid, ())) >= 10 and list(queues[sid]), message="a backlog")
    held = sum(len(msgspec.json.encode(list(item))) for item in backlog)
    assert held < 500 * len(backlog), f"{held} bytes held by {len(backlog)} waiting events"
    saw = await wait_for(app_client, sid, "Saw", 21, timeout=60)
    assert [d["size"] for _, d, _ in saw] == [len(blob)] * 21


async def test_replace_swaps_the_types_event_handlers(app_client):
    # ?replace=true (`handler add event --replace`): the scope's handlers of the type go in
    # the same step, so a setup script run twice leaves one handler, not two running twice.
    sid = await setup(app_client)
    code = """
        async def h(event):
            await bus.publish("Ran", {{"by": "{by}"}})
    """
    await add_event_handler(app_client, sid, "Tick", code.format(by="old"))
    await add_event_handler(app_client, sid, "Tick", code.format(by="old"))
    await add_event_handler(app_client, sid, "Other", "def o(event):\n    pass\n")
    resp = await app_client.post(
        f"/api/sessions/{sid}/handlers/events?replace=true",
        json={"event_type": "Tick", "handler_function": textwrap.dedent(code.format(by="new"))},
    )
    assert resp.status == 201, await resp.text()
    listed = (await (await app_client.get(f"/api/sessions/{sid}/handlers")).json())["handlers"]
    assert sorted(h["type"] for h in listed) == ["Other", "Tick"]
    await publish(app_client, sid, "Tick")
    await wait_for(app_client, sid, "Ran", 1)
    await handlers_idle(app_client, sid)
    assert [d["by"] for _, d, _ in await events_of(app_client, sid, "Ran")] == ["new"]
