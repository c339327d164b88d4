"""Bugs schemathesis found (tests/fuzz), pinned so they stay fixed."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.conftest import assert_envelope, create_session


async def test_huge_offsets_are_422_not_500(app_client: TestClient) -> None:
    sid = (await create_session(app_client))["session_id"]
    for path in ("/api/sessions", f"/api/sessions/{sid}/commands", f"/api/sessions/{sid}/events"):
        resp = await app_client.get(path, params={"offset": str(2**63)})
        assert resp.status == 422, path
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "offset"


async def test_times_at_the_edges_are_not_500(app_client: TestClient) -> None:
    """A bound before year 1 (or after 9999) in UTC means "from the beginning" ("to the end")."""
    sid = (await create_session(app_client))["session_id"]
    cases = [
        ("/api/observability/logs", {"since": "99999999999w"}),
        ("/api/observability/logs", {"since": "1" * 400 + "s"}),
        ("/api/observability/traces", {"since": "0001-01-01T00:00:00+01:00"}),
        (f"/api/sessions/{sid}/events", {"until": "9999-12-31T23:59:59-01:00"}),
    ]
    for path, params in cases:
        resp = await app_client.get(path, params=params)
        assert resp.status == 200, (path, await resp.text())


async def test_years_before_1000_round_trip(app_client: TestClient) -> None:
    resp = await app_client.get("/api/observability/traces", params={"since": "0215-02-03T01:59:48Z"})
    assert resp.status == 200, await resp.text()


async def test_handler_types_starting_with_underscore_can_be_deleted(app_client: TestClient) -> None:
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.delete(f"/api/sessions/{sid}/handlers/events/__main__")
    assert resp.status == 404  # no such handler, but a valid name
    assert_envelope(await resp.json(), "HANDLER_NOT_FOUND")


async def test_a_nul_in_stored_text_is_never_a_500(app_client: TestClient, database_url: str | None) -> None:
    """PostgreSQL's text holds no NUL (SQLite's does): a session name, a tool's description
    (its docstring too), an engine's model name or a webhook's URL with one was a 500 there.
    Now 422 on PostgreSQL, stored as given on SQLite; a NUL inside JSON (data, metadata) is
    stored on both."""
    sid = (await create_session(app_client))["session_id"]
    nul = "\x00"
    requests = [
        ("/api/sessions", {"name": f"a{nul}b"}),
        (f"/api/sessions/{sid}/fork", {"name": f"a{nul}b"}),
        (f"/api/sessions/{sid}/tools", {"name": "t1", "description": nul, "function_code": "def t1():\n    pass\n"}),
        (f"/api/sessions/{sid}/tools", {"name": "t2", "function_code": 'def t2():\n    "a\\x00b"\n'}),
        ("/api/engines", {"engine_type": "DummyEngine", "session_id": sid, "model_name": nul}),
        ("/api/webhooks", {"url": f"http://127.0.0.1:9/{nul}", "session_id": sid}),
    ]
    for path, body in requests:
        resp = await app_client.post(path, json=body)
        if database_url is None:
            assert resp.status == 201, (path, await resp.text())
        else:
            assert resp.status == 422, (path, await resp.text())
            assert "NUL" in assert_envelope(await resp.json(), "VALIDATION_ERROR")["message"]
    resp = await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "E", "data": {nul: nul}})
    assert resp.status == 201, await resp.text()


async def test_a_handler_priority_past_its_range_is_422_not_500(app_client: TestClient) -> None:
    """The range (-2**31 .. 2**31-1) was only written in the schema: 2**63 reached the
    INSERT (SQLite: "Python int too large", PostgreSQL: out of range) and was a 500."""
    sid = (await create_session(app_client))["session_id"]
    for priority in (2**63, -(2**63) - 1, 2**31):
        resp = await app_client.post(
            f"/api/sessions/{sid}/handlers/events",
            json={"event_type": "E", "priority": priority, "handler_function": "def h(e):\n    pass\n"},
        )
        assert resp.status == 422, (priority, await resp.text())
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "priority"
