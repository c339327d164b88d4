"""What a webhook costs the daemon: its deliveries hold no copy of their event, and an answer's
body is not read whole. On the real app, delivering to real local aiohttp receivers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from llmgine_daemon.api.keys import BUS

from tests.api.test_webhooks import deliveries, register, serve
from tests.conftest import create_session
from tests.eventually import eventually


async def test_deliveries_keep_no_copy_of_their_event(make_client):
    # A session's webhooks (up to webhooks.max_per_session) each stored the event's JSON in its
    # delivery: 20 copies of every event, past the session's storage budget and uncounted.
    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=500 if len(seen) == 1 else 204)

    runner, port = await serve("/hook", hook)
    try:
        client = await make_client(LLMGINE_WEBHOOK_RETRY_BASE="0.2")
        s = await create_session(client)
        hooks = [
            await register(client, url=f"http://127.0.0.1:{port}/hook", events=["Big"], session_id=s["session_id"])
            for _ in range(3)
        ]
        big = "x" * 200_000
        resp = await client.post(
            f"/api/sessions/{s['session_id']}/events", json={"event_type": "Big", "data": {"b": big}}
        )
        assert resp.status == 201

        async def ended() -> bool:
            rows = [d for h in hooks for d in await deliveries(client, h["webhook_id"])]
            return len(rows) == 3 and all(d["status"] == "delivered" for d in rows)

        await eventually(ended, message="three deliveries, one of them retried")
        stored = await client.app[BUS].store.fetchone("SELECT SUM(LENGTH(payload)) FROM webhook_deliveries")
        assert stored is not None and stored[0] < 1000, stored
        # Every attempt, the retried one included, carried the event as stored.
        assert len(seen) == 4
        for body in seen:
            payload = json.loads(body)
            assert payload["type"] == "Big" and payload["data"]["data"] == {"b": big}
    finally:
        await runner.cleanup()


async def test_a_delivery_whose_event_is_gone_fails_without_sending(make_client):
    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=500)

    runner, port = await serve("/hook", hook)
    try:
        client = await make_client(LLMGINE_WEBHOOK_RETRY_BASE="0.3")
        s = await create_session(client)
        # A webhook for every session's events outlives a purged one.
        hook_row = await register(client, url=f"http://127.0.0.1:{port}/hook", events=["Ping"])
        await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping", "data": {"n": 1}})
        await eventually(lambda: seen, message="the first attempt")
        assert (await client.delete(f"/api/sessions/{s['session_id']}?purge=true")).status in (200, 204)

        async def failed() -> list[dict[str, Any]]:
            rows = await deliveries(client, hook_row["webhook_id"])
            return rows if rows and rows[0]["status"] == "failed" else []

        rows = await eventually(failed, message="the delivery failed once its event was gone")
        assert len(seen) == 1  # nothing sent once the event was gone
        last = rows[0]["history"][-1]
        assert last["status_code"] is None and "no longer stored" in last["error"]
    finally:
        await runner.cleanup()


async def test_an_answers_body_is_not_read_whole(make_client):
    # A target answering a gigabyte within webhooks.timeout grew llmgined by as much, for each
    # delivery in flight (1.6 GB in 10 s for four, seen): only the status counts.
    sent = [0]
    chunk = b"A" * (1 << 20)

    async def hook(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200)
        resp.content_length = 1 << 40
        await resp.prepare(request)
        try:
            while sent[0] < 1 << 34:
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    runner, port = await serve("/hook", hook)
    try:
        client = await make_client(LLMGINE_WEBHOOK_TIMEOUT="3", LLMGINE_WEBHOOK_RETRY_BASE="600")
        s = await create_session(client)
        hook_row = await register(client, url=f"http://127.0.0.1:{port}/hook", session_id=s["session_id"])
        await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping"})

        async def attempted() -> list[dict[str, Any]]:
            return [d for d in await deliveries(client, hook_row["webhook_id"]) if d["attempts"]]

        rows = await eventually(attempted, message="one attempt")
        assert rows[0]["status"] == "delivered", rows
        assert rows[0]["history"][0]["status_code"] == 200
        # The daemon read what it keeps and closed the connection; the receiver could write
        # only what the sockets' buffers hold past that.
        assert sent[0] < 64 << 20, sent[0]
    finally:
        await runner.cleanup()
