"""Webhooks on the real app, delivering to a real local aiohttp receiver.

The signature is checked here with the Standard Webhooks algorithm written out independently
of the daemon's code: HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}", keyed with
the base64-decoded part of the whsec_ secret, base64-encoded, prefixed "v1,".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import assert_documented, assert_envelope, create_session
from tests.eventually import eventually


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests first
    seen: int = 0


async def serve(path: str, handler: Any) -> tuple[web.AppRunner, int]:
    """A local HTTP server answering POST ``path`` with ``handler``: its runner and port."""
    app = web.Application()
    app.router.add_post(path, handler)
    # Its cleanup waits up to shutdown_timeout for requests in flight (aiohttp's default: 60 s),
    # and a daemon's sender may still be in one when a test ends: a test must not wait that out.
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        rec = box[0]
        rec.seen += 1
        if rec.seen <= rec.fail_first:
            return web.Response(status=500, text="not yet")
        rec.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    runner, port = await serve("/hook", hook)
    box.append(Receiver(f"http://127.0.0.1:{port}/hook"))
    try:
        yield box[0]
    finally:
        await runner.cleanup()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, s) for s in offered)


async def register(client: Any, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/webhooks", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def deliveries(client: Any, webhook_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert resp.status == 200, await resp.text()
    return (await resp.json())["deliveries"]


async def test_matching_events_are_delivered_signed(make_client, receiver):
    client = await make_client()
    s = await create_session(client)
    hook = await register(client, url=receiver.url, events=["Test.*"], session_id=s["session_id"])
    assert hook["secret"].startswith("whsec_")
    other = await create_session(client)
    for sid, event_type in (
        (s["session_id"], "Other"),
        (other["session_id"], "Test.Ping"),
        (s["session_id"], "Test.Ping"),
    ):
        resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": event_type, "data": {"n": 1}})
        assert resp.status == 201
    await eventually(lambda: receiver.requests, message="a delivery")
    headers, body = receiver.requests[0]
    assert verify(hook["secret"], headers, body)
    assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body)
    payload = json.loads(body)
    assert payload["type"] == "Test.Ping"
    assert payload["data"]["session_id"] == s["session_id"] and payload["data"]["data"] == {"n": 1}
    assert headers["Content-Type"] == "application/json"
    # The later event was the one delivered: the two before it were judged already. (The
    # receiver answers before the daemon records the attempt: wait for the record.)

    async def recorded() -> list[dict[str, Any]]:
        rows = await deliveries(client, hook["webhook_id"])
        return rows if rows and rows[0]["status"] != "pending" else []

    rows = await eventually(recorded)
    assert [(d["event_type"], d["status"]) for d in rows] == [("Test.Ping", "delivered")]
    assert rows[0]["delivery_id"] == headers["webhook-id"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in rows[0]["history"]] == [(1, 204, None)]
    # The secret is shown once: never by GET.
    got = await (await client.get(f"/api/webhooks/{hook['webhook_id']}")).json()
    assert got["secret"] is None and got["delivered"] == 1
    listed = await (await client.get("/api/webhooks")).json()
    assert [w["webhook_id"] for w in listed["webhooks"]] == [hook["webhook_id"]]
    assert (await client.delete(f"/api/webhooks/{hook['webhook_id']}")).status == 204
    resp = await client.get(f"/api/webhooks/{hook['webhook_id']}")
    assert_envelope(await resp.json(), "NOT_FOUND")


async def test_a_given_secret_is_used_and_500s_are_retried_with_backoff(make_client, receiver):
    client = await make_client(LLMGINE_WEBHOOK_RETRY_BASE="0.2")
    receiver.fail_first = 2
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    s = await create_session(client)
    hook = await register(client, url=receiver.url, events=["Ping"], secret=secret)
    await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping"})
    await eventually(lambda: receiver.requests, message="the third attempt")
    headers, body = receiver.requests[0]
    assert verify(secret, headers, body)

    async def done() -> list[dict[str, Any]]:
        rows = await deliveries(client, hook["webhook_id"])
        return rows if rows and rows[0]["status"] == "delivered" else []

    (row,) = await eventually(done)
    history = row["history"]
    assert [(a["attempt"], a["status_code"]) for a in history] == [(1, 500), (2, 500), (3, 204)]
    assert history[0]["error"] == "HTTP 500" and history[2]["error"] is None
    assert row["attempts"] == 3
    # Exponential backoff: at least 0.2 s, then at least 0.4 s between attempts.
    from llmgine_daemon.protocol import parse_iso

    starts = [parse_iso(a["started_at"]) for a in history]
    assert (starts[1] - starts[0]).total_seconds() >= 0.2
    assert (starts[2] - starts[1]).total_seconds() >= 0.4


async def test_a_delivery_that_keeps_failing_is_failed_after_retry_for(make_client, receiver):
    # Retried for 2 s (attempts at about 0, 0.1, 0.3, 0.7 and 1.5 s): 0.5 s failed the test when a
    # loaded machine took that long over the first attempt (then rightly the only one).
    client = await make_client(LLMGINE_WEBHOOK_RETRY_BASE="0.1", LLMGINE_WEBHOOK_RETRY_FOR="2")
    receiver.fail_first = 10**6
    s = await create_session(client)
    hook = await register(client, url=receiver.url, session_id=s["session_id"])
    await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping"})

    async def failed() -> list[dict[str, Any]]:
        rows = [d for d in await deliveries(client, hook["webhook_id"]) if d["event_type"] == "Ping"]
        return rows if rows and rows[0]["status"] == "failed" else []

    (row,) = await eventually(failed)
    assert row["attempts"] >= 2 and row["finished_at"] and row["next_attempt_at"] is None
    assert all(a["status_code"] == 500 for a in row["history"])


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://10.1.2.3/hook", "FORBIDDEN"),
        ("http://example.com/hook", "FORBIDDEN"),
        ("https://[2001:db8::1]/hook", "FORBIDDEN"),
        ("ftp://127.0.0.1/hook", "VALIDATION_ERROR"),
        ("http://user:pw@127.0.0.1/hook", "VALIDATION_ERROR"),
        ("http:///nohost", "VALIDATION_ERROR"),
        ("http://127.0.0.1/" + "x" * 2100, "VALIDATION_ERROR"),
    ],
)
async def test_hosts_not_allowed_are_refused_at_registration(app_client, url, code):
    resp = await app_client.post("/api/webhooks", json={"url": url})
    assert_envelope(await resp.json(), code)
    assert (await (await app_client.get("/api/webhooks")).json())["total"] == 0


async def test_a_name_resolving_to_an_address_not_allowed_is_refused_at_delivery(make_client, receiver):
    # "localhost" may be named, but 127.0.0.1 (what it resolves to) is in no allowed network.
    client = await make_client(LLMGINE_WEBHOOK_ALLOWED_HOSTS="localhost,::1", LLMGINE_WEBHOOK_RETRY_BASE="60")
    refused = await client.post("/api/webhooks", json={"url": receiver.url})  # the address itself: no
    assert_envelope(await refused.json(), "FORBIDDEN")
    s = await create_session(client)
    hook = await register(client, url=receiver.url.replace("127.0.0.1", "localhost"), session_id=s["session_id"])
    await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping"})

    async def attempted() -> list[dict[str, Any]]:
        return [d for d in await deliveries(client, hook["webhook_id"]) if d["attempts"]]

    rows = await eventually(attempted)
    error = rows[0]["history"][0]["error"]
    assert "not allowed" in error and "127.0.0.1" in error and rows[0]["history"][0]["status_code"] is None
    assert receiver.seen == 0


async def test_session_tokens_manage_their_own_sessions_webhooks_only(make_client, receiver):
    client = await make_client(authenticated=False, LLMGINE_WEBHOOK_SESSION_TOKEN_ALLOWED_HOSTS="127.0.0.0/8")
    from tests.conftest import authorize

    mine, theirs = await create_session(authorize(client)), await create_session(client)
    client.session.headers.pop("Authorization")
    token = {"X-Session-Token": mine["session_token"]}
    own = await client.post(
        "/api/webhooks", json={"url": receiver.url, "session_id": mine["session_id"]}, headers=token
    )
    assert own.status == 201
    own_id = (await own.json())["webhook_id"]
    for body in ({"url": receiver.url, "session_id": theirs["session_id"]}, {"url": receiver.url}):
        resp = await client.post("/api/webhooks", json=body, headers=token)
        assert_envelope(await resp.json(), "FORBIDDEN")
    authorize(client)
    global_hook = await register(client, url=receiver.url)
    client.session.headers.pop("Authorization")
    listed = await (await client.get("/api/webhooks", headers=token)).json()
    assert [w["webhook_id"] for w in listed["webhooks"]] == [own_id]
    for path in (f"/api/webhooks/{global_hook['webhook_id']}", f"/api/webhooks/{global_hook['webhook_id']}/deliveries"):
        assert_envelope(await (await client.get(path, headers=token)).json(), "NOT_FOUND")
    resp = await client.delete(f"/api/webhooks/{global_hook['webhook_id']}", headers=token)
    assert_envelope(await resp.json(), "NOT_FOUND")
    assert (await client.delete(f"/api/webhooks/{own_id}", headers=token)).status == 204


async def test_limits_per_session_and_in_all(make_client, receiver):
    client = await make_client(LLMGINE_WEBHOOK_MAX_PER_SESSION="1", LLMGINE_WEBHOOK_MAX_TOTAL="2")
    a, b = await create_session(client), await create_session(client)
    await register(client, url=receiver.url, session_id=a["session_id"])
    resp = await client.post("/api/webhooks", json={"url": receiver.url, "session_id": a["session_id"]})
    assert assert_envelope(await resp.json(), "LIMIT_REACHED")["details"]["limit"] == "webhooks.max_per_session"
    await register(client, url=receiver.url, session_id=b["session_id"])
    resp = await client.post("/api/webhooks", json={"url": receiver.url})
    assert assert_envelope(await resp.json(), "LIMIT_REACHED")["details"]["limit"] == "webhooks.max_total"
    resp = await client.post("/api/webhooks", json={"url": receiver.url, "session_id": "no-such-session"})
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    resp = await client.post("/api/webhooks", json={"url": receiver.url, "secret": "whsec_short"})
    assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_ended_deliveries_are_forgotten_after_keep_days(make_client, receiver):
    client = await make_client(LLMGINE_WEBHOOK_KEEP_DAYS="0.00001")  # under a second
    s = await create_session(client)
    hook = await register(client, url=receiver.url, events=["Ping"], session_id=s["session_id"])
    await client.post(f"/api/sessions/{s['session_id']}/events", json={"event_type": "Ping"})
    await eventually(lambda: receiver.requests, message="a delivery")

    async def forgotten() -> bool:
        page = await (await client.get(f"/api/webhooks/{hook['webhook_id']}/deliveries")).json()
        return page["total"] == 0

    await eventually(forgotten, timeout=20)
    got = await (await client.get(f"/api/webhooks/{hook['webhook_id']}")).json()
    assert (got["pending"], got["delivered"], got["failed"]) == (0, 0, 0)


@pytest.mark.parametrize("held_by", ["webhook", "session"])
async def test_a_target_that_never_answers_holds_up_no_other_session(make_client, receiver, held_by):
    """The sender claimed the 16 oldest due deliveries and waited for all of them: one session's
    webhook to a target that never answers, with a backlog of events, held every other
    session's deliveries back for its timeouts (43 s for one delivery behind 64, seen). Then at
    most PER_HOOK of one webhook were in flight, but a session with CLAIM / PER_HOOK webhooks to
    such a target (its own server, where webhooks.allowed_hosts lets it) still held every slot.
    One webhook holds at most PER_HOOK, one session's webhooks PER_SESSION."""
    from llmgine_daemon.bus.webhook_outbox import CLAIM, PER_HOOK, PER_SESSION

    hooks, events, limit = (
        (1, 64, PER_HOOK) if held_by == "webhook" else (CLAIM // PER_HOOK + 1, 2 * PER_HOOK, PER_SESSION)
    )
    release = asyncio.Event()
    held = 0

    async def hang(request: web.Request) -> web.Response:
        nonlocal held
        held += 1
        await release.wait()
        return web.Response(status=204)

    runner, port = await serve("/hang", hang)
    try:
        # An attempt may take 10 minutes: waiting one out would fail this test's waits.
        client = await make_client(LLMGINE_WEBHOOK_TIMEOUT="600")
        slow, fast = await create_session(client), await create_session(client)
        url = f"http://127.0.0.1:{port}/hang"
        registered = [
            await register(client, url=url, events=["Ping"], session_id=slow["session_id"]) for _ in range(hooks)
        ]
        for _ in range(events):
            resp = await client.post(f"/api/sessions/{slow['session_id']}/events", json={"event_type": "Ping"})
            assert resp.status == 201
        await eventually(lambda: held >= limit, message="the silent target holds its deliveries")
        await register(client, url=receiver.url, events=["Ping"], session_id=fast["session_id"])
        resp = await client.post(f"/api/sessions/{fast['session_id']}/events", json={"event_type": "Ping"})
        assert resp.status == 201
        await eventually(lambda: receiver.requests, message="the other session's delivery, past the backlog")
        assert held == limit  # no more of the slow ones in flight than that
        # Their backlogs go with them: nothing more is sent to the target while it closes.
        for hook in registered:
            assert (await client.delete(f"/api/webhooks/{hook['webhook_id']}")).status == 204
    finally:
        release.set()
        await runner.cleanup()


async def test_if_exists_reuses_or_refuses_the_same_webhook(app_client):
    # An addition: a setup script run twice registered two webhooks, so each event was POSTed
    # twice. ?if_exists=reuse answers the one of this URL, events and session (200, never its
    # secret again); ?if_exists=error is 409; other events or another session is another one.
    sid = (await create_session(app_client))["session_id"]
    body = {"url": "http://127.0.0.1:9/hook", "events": ["Command*"], "session_id": sid}
    resp = await app_client.post("/api/webhooks", json=body)
    assert resp.status == 201
    first = await resp.json()
    resp = await app_client.post("/api/webhooks?if_exists=reuse", json=body)
    assert resp.status == 200, await resp.text()
    again = await resp.json()
    assert again["webhook_id"] == first["webhook_id"] and again["secret"] is None
    resp = await app_client.post("/api/webhooks?if_exists=error", json=body)
    assert resp.status == 409
    assert assert_envelope(await resp.json(), "CONFLICT")["details"]["webhook_id"] == first["webhook_id"]
    # The same secret given again is the same webhook; another one is a conflict (reusing it
    # would leave the receiver checking signatures with a secret the daemon does not use).
    resp = await app_client.post("/api/webhooks?if_exists=reuse", json={**body, "secret": first["secret"]})
    assert resp.status == 200, await resp.text()
    other_secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    resp = await app_client.post("/api/webhooks?if_exists=reuse", json={**body, "secret": other_secret})
    assert resp.status == 409
    assert "another secret" in assert_envelope(await resp.json(), "CONFLICT")["message"]
    for other in ({"events": ["*"]}, {"session_id": None}):
        resp = await app_client.post("/api/webhooks?if_exists=reuse", json={**body, **other})
        assert resp.status == 201, await resp.text()
    listed = (await (await app_client.get("/api/webhooks")).json())["webhooks"]
    assert len([w for w in listed if w["url"] == body["url"]]) == 3


async def test_sessions_with_silent_targets_leave_slots_for_the_others(make_client, receiver):
    """Each session's webhooks could hold PER_SESSION (half) of the CLAIM slots: two sessions
    with targets that never answer (their own servers, where webhooks.allowed_hosts lets them)
    held all of them, and every other session's deliveries waited out their timeouts. A
    session now holds a share of the slots among the sessions sending, with room for one more."""
    from llmgine_daemon.bus.webhook_outbox import CLAIM, PER_HOOK, share

    release = asyncio.Event()
    held: dict[str, int] = {"a": 0, "b": 0}

    async def hang(request: web.Request) -> web.Response:
        held[request.query["s"]] += 1
        await release.wait()
        return web.Response(status=204)

    runner, port = await serve("/hang", hang)
    try:
        client = await make_client(LLMGINE_WEBHOOK_TIMEOUT="600")  # never waited out here
        slow = {name: (await create_session(client))["session_id"] for name in held}
        fast = (await create_session(client))["session_id"]
        for name, sid in slow.items():
            for _ in range(CLAIM // PER_HOOK):  # enough webhooks to hold every slot alone
                await register(client, url=f"http://127.0.0.1:{port}/hang?s={name}", events=["Ping"], session_id=sid)
            for _ in range(2 * PER_HOOK):
                resp = await client.post(f"/api/sessions/{sid}/events", json={"event_type": "Ping"})
                assert resp.status == 201
        await eventually(lambda: min(held.values()) >= share(2), message="both silent sessions hold slots")
        await register(client, url=receiver.url, events=["Ping"], session_id=fast)
        resp = await client.post(f"/api/sessions/{fast}/events", json={"event_type": "Ping"})
        assert resp.status == 201
        await eventually(lambda: receiver.requests, message="the third session's delivery")
        assert sum(held.values()) < CLAIM and max(held.values()) <= share(1)
    finally:
        release.set()
        await runner.cleanup()


async def test_a_webhook_for_an_ended_session_is_refused_as_a_schedule_is(app_client, receiver):
    """An ended session publishes nothing more, so a webhook registered for it after its end
    would never send anything: 409 SESSION_CLOSED, as a schedule's registration is (it was 201).
    One registered before the end stays and sends the session's last events."""
    s = await create_session(app_client)
    kept = await register(app_client, url=receiver.url, session_id=s["session_id"])
    assert (await app_client.delete(f"/api/sessions/{s['session_id']}")).status == 200
    resp = await app_client.post("/api/webhooks", json={"url": receiver.url, "session_id": s["session_id"]})
    assert resp.status == 409, await resp.text()
    assert_envelope(await resp.json(), "SESSION_CLOSED")
    await assert_documented(app_client, "POST", "/api/webhooks", 409, "SESSION_CLOSED")
    listed = await (await app_client.get("/api/webhooks", params={"session_id": s["session_id"]})).json()
    assert [w["webhook_id"] for w in listed["webhooks"]] == [kept["webhook_id"]]
    resp = await app_client.post("/api/webhooks", json={"url": receiver.url, "session_id": "no-such-session"})
    assert resp.status == 404, await resp.text()
