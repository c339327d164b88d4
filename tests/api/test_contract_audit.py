"""What an outside audit of the API contract (/openapi.json, the README) found a client would
hit: each test is one finding, on the real app with SQLite and PostgreSQL."""

from __future__ import annotations

from tests.api.bus_helpers import session_with_engine
from tests.conftest import assert_envelope, create_session

DUMMY = "DummyEngineCommand"


async def test_prefer_wait_is_a_preference_never_an_error(app_client):
    """RFC 7240: a server ignores a preference it cannot honour; it does not refuse the
    request. A wait past the longest one is held that long, and Preference-Applied says so;
    one that is not a number is ignored. (``?wait=`` is a parameter: still checked.)"""
    sid, _ = await session_with_engine(app_client)
    body = {"command_type": DUMMY, "parameters": {"prompt": "x"}}
    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body, headers={"Prefer": "wait=600"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Preference-Applied"] == "wait=300"
    assert (await resp.json())["status"] == "completed"

    resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body, headers={"Prefer": "wait=1.2.3"})
    assert resp.status in (200, 202), await resp.text()
    assert "Preference-Applied" not in resp.headers

    resp = await app_client.post(f"/api/sessions/{sid}/commands?wait=600", json=body)
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "wait"


async def test_retrying_nothing_in_a_session_that_is_not_there_is_404(app_client):
    resp = await app_client.post("/api/sessions/no-such-session/commands/retry", json={})
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")
    # In a real session, nothing asked for is still an empty answer, paged as the others are.
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(f"/api/sessions/{sid}/commands/retry", json={})
    assert resp.status == 200
    assert await resp.json() == {"commands": [], "total": 0, "limit": 1000, "offset": 0}
