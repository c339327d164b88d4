"""Where a session token's webhooks may call: ``webhooks.session_token_allowed_hosts`` (none by
default), not ``webhooks.allowed_hosts`` (loopback by default, for API keys and the socket
owner). With loopback open to them, a session token (a browser page's) made the daemon POST
JSON it chose (its events' data) to any port of the daemon's machine, and read each attempt's
status code or connection error back from the deliveries: a scan of the local services, and
writes into those that take a JSON POST without authentication."""

from __future__ import annotations

from typing import Any

from tests.api.test_webhooks import Receiver, receiver  # noqa: F401 - the fixture
from tests.conftest import assert_envelope, authorize, create_session
from tests.eventually import eventually


async def token_client(make_client: Any, **env: str) -> tuple[Any, str, dict[str, str]]:
    client = await make_client(authenticated=False, **env)
    session = await create_session(authorize(client))
    client.session.headers.pop("Authorization")
    return client, session["session_id"], {"X-Session-Token": session["session_token"]}


async def post_hook(client: Any, token: dict[str, str], url: str, sid: str, expect: int) -> dict[str, Any]:
    resp = await client.post("/api/webhooks", json={"url": url, "session_id": sid}, headers=token)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def test_a_session_token_calls_no_local_port_by_default(make_client: Any, receiver: Receiver) -> None:  # noqa: F811
    client, sid, token = await token_client(make_client)
    error = assert_envelope(await post_hook(client, token, receiver.url, sid, 403), "FORBIDDEN")
    assert error["details"]["setting"] == "webhooks.session_token_allowed_hosts", error
    assert "webhooks.session_token_allowed_hosts" in error["message"]
    # An API key may, for that session too (webhooks.allowed_hosts: loopback).
    resp = await authorize(client).post("/api/webhooks", json={"url": receiver.url, "session_id": sid})
    assert resp.status == 201, await resp.text()


async def test_the_owner_may_open_hosts_to_session_tokens(make_client: Any, receiver: Receiver) -> None:  # noqa: F811
    client, sid, token = await token_client(make_client, LLMGINE_WEBHOOK_SESSION_TOKEN_ALLOWED_HOSTS="127.0.0.0/8")
    await post_hook(client, token, receiver.url, sid, 201)
    await client.post(f"/api/sessions/{sid}/events", json={"event_type": "Ping"}, headers=token)
    await eventually(lambda: receiver.requests, message="the session token's webhook was not delivered")


async def test_a_session_tokens_webhook_is_checked_against_its_list_at_delivery(
    make_client: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    """ "localhost" may be named in the session tokens' list, but 127.0.0.1 (what it resolves
    to) is in no network of it: refused at every attempt, though webhooks.allowed_hosts (the
    list API keys use) allows loopback."""
    client, sid, token = await token_client(
        make_client, LLMGINE_WEBHOOK_SESSION_TOKEN_ALLOWED_HOSTS="localhost", LLMGINE_WEBHOOK_RETRY_BASE="60"
    )
    hook = await post_hook(client, token, receiver.url.replace("127.0.0.1", "localhost"), sid, 201)
    await client.post(f"/api/sessions/{sid}/events", json={"event_type": "Ping"}, headers=token)

    async def attempted() -> list[dict[str, Any]]:
        resp = await client.get(f"/api/webhooks/{hook['webhook_id']}/deliveries", headers=token)
        return [d for d in (await resp.json())["deliveries"] if d["attempts"]]

    rows = await eventually(attempted)
    error = rows[0]["history"][0]["error"]
    assert "not allowed" in error and "webhooks.session_token_allowed_hosts" in error, error
    assert receiver.seen == 0
