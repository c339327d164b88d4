"""Where the contract is silent, clients expect what its FastAPI/pydantic server does: an
integral float (26.0) is an integer, a repeated query parameter is its last value, a log level
may come in any case; and the document's enums are what the daemon answers."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import assert_envelope, create_session


async def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_an_integral_float_is_an_integer_in_bodies(app_client: TestClient) -> None:
    """JSON Schema's `integer` (what /openapi.json says) takes 26.0, as pydantic does."""
    sid = (await create_session(app_client))["session_id"]
    fork = await _ok(await app_client.post(f"/api/sessions/{sid}/fork", json={"at_seq": 1.0}), 201)
    assert fork["session"]["session_id"]
    handler = {"event_type": "Foo", "handler_function": "async def h(event):\n    pass\n", "priority": 3.0}
    assert (await _ok(await app_client.post(f"/api/sessions/{sid}/handlers/events", json=handler), 201))[
        "priority"
    ] == 3
    key = await _ok(await app_client.post("/api/auth/keys", json={"expires_in": 3600.0}), 201)
    assert key["expires_at"]
    # Integer fields inside free-form objects, checked by the daemon: an engine's configuration
    # (stored as the integer it is) and a command's metadata.retries.
    engine = await _ok(
        await app_client.post(
            "/api/engines", json={"engine_type": "DummyEngine", "session_id": sid, "configuration": {"max_tokens": 2.0}}
        ),
        201,
    )
    assert engine["configuration"] == {"max_tokens": 2}
    command = {
        "command_type": "DummyEngineCommand",
        "parameters": {"prompt": "one two three", "max_tokens": 1.0},
        "metadata": {"retries": 2.0},
    }
    done = await _ok(await app_client.post(f"/api/sessions/{sid}/commands?wait=10", json=command))
    assert done["status"] == "completed", done
    assert done["result"]["response"] == "Dummy"  # max_tokens 1: one word
    # A float anywhere else stays the float it was; a fraction is still no integer.
    event = await _ok(
        await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "E", "data": {"v": 3.0}}), 201
    )
    assert event["data"] == {"v": 3.0} and isinstance(event["data"]["v"], float)
    for path, body, field in [
        (f"/api/sessions/{sid}/fork", {"at_seq": 1.5}, "at_seq"),
        ("/api/auth/keys", {"expires_in": "3600"}, "expires_in"),
        ("/api/engines", {"engine_type": "DummyEngine", "session_id": sid, "configuration": {"max_tokens": 2.5}}, None),
    ]:
        resp = await app_client.post(path, json=body)
        assert resp.status == 422, (path, await resp.text())
        error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
        assert field is None or error["details"]["field"] == field, error


async def test_an_integral_float_is_an_integer_in_the_query(app_client: TestClient) -> None:
    await create_session(app_client)
    listing = await _ok(await app_client.get("/api/sessions?limit=26.0&offset=0.00"))
    assert (listing["limit"], listing["offset"]) == (26, 0)
    for bad in ("26.5", "2.6e1", "0x1a", "\u0662\u0666", "9" * 5000):
        resp = await app_client.get("/api/sessions", params={"limit": bad})
        assert resp.status == 422, bad
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "limit"


async def test_a_repeated_query_parameter_is_its_last_value(app_client: TestClient) -> None:
    first = (await create_session(app_client))["session_id"]
    second = (await create_session(app_client))["session_id"]
    for sid in (first, second):
        await _ok(await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid}), 201)
    assert (await _ok(await app_client.get("/api/sessions?limit=1&limit=2")))["limit"] == 2
    assert (await _ok(await app_client.get("/api/sessions?limit=1000&limit=2&offset=1")))["limit"] == 2
    # The bad one first, the good one last: as FastAPI, the last one counts...
    assert (await _ok(await app_client.get("/api/sessions?limit=x&limit=3")))["limit"] == 3
    # ... and the guard's identifier check reads the same value as the route.
    engines = await _ok(await app_client.get(f"/api/engines?session_id={first}&session_id={second}"))
    assert {e["session_id"] for e in engines["engines"]} == {second}
    resp = await app_client.get(f"/api/engines?session_id={first}&session_id=..%2F")
    assert resp.status == 422
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "session_id"


async def test_log_levels_in_any_case(app_client: TestClient) -> None:
    """The contract's config writes LOG_LEVEL=INFO and its requests level=info: both are a level."""
    for given, stored in [("INFO", "info"), ("Warning", "warning"), ("warn", "warning"), ("FATAL", "critical")]:
        record = await _ok(await app_client.post("/api/observability/logs", json={"level": given, "message": "m"}), 201)
        assert record["level"] == stored
    resp = await app_client.post("/api/observability/logs", json={"level": "loud", "message": "m"})
    assert resp.status == 422
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "level"
    logs = await _ok(await app_client.get("/api/observability/logs?level=CRITICAL"))
    assert logs["logs"] and {r["level"] for r in logs["logs"]} == {"critical"}


async def test_status_fields_are_enums(app_client: TestClient) -> None:
    """Every `status` (and `state`, `level`) of an answer is one of the values the document lists."""
    doc = await _ok(await app_client.get("/openapi.json"))
    plain = []
    for name, schema in doc["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if field in ("status", "state", "level") and "enum" not in prop and "anyOf" not in prop:
                plain.append(f"{name}.{field}")
    assert not plain, f"plain strings where the values are known: {plain}"
    schemas = doc["components"]["schemas"]
    assert set(schemas["Command"]["properties"]["status"]["enum"]) >= {"queued", "executing", "completed"}
    assert set(schemas["Session"]["properties"]["status"]["enum"]) == {"active", "closed"}
    assert set(schemas["Health"]["properties"]["status"]["enum"]) == {"healthy", "degraded", "shutting_down"}
    # What the daemon answers is among them.
    sid = (await create_session(app_client))["session_id"]
    session = await _ok(await app_client.get(f"/api/sessions/{sid}"))
    assert session["status"] in schemas["Session"]["properties"]["status"]["enum"]
    health = await _ok(await app_client.get("/api/health"))
    assert health["status"] in schemas["Health"]["properties"]["status"]["enum"]


async def test_a_body_without_content_type_is_json(app_client: TestClient) -> None:
    """FastAPI reads a body that names no Content-Type as JSON (`requests.post(url,
    data=json.dumps(body))` sends none); any other type than JSON is still 415."""
    resp = await app_client.post("/api/sessions", data=b'{"name": "bare"}', skip_auto_headers=["Content-Type"])
    assert (await _ok(resp, 201))["name"] == "bare"
    resp = await app_client.post("/api/sessions", data=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert_envelope(await resp.json(), "UNSUPPORTED_MEDIA_TYPE")


async def test_query_booleans_as_pydantic_reads_them(app_client: TestClient) -> None:
    sid = (await create_session(app_client))["session_id"]
    for word in ("t", "Y", "f", "n", "true", "0"):
        await _ok(await app_client.get(f"/api/sessions/{sid}/commands?dead={word}"))
    resp = await app_client.get(f"/api/sessions/{sid}/commands?dead=maybe")
    assert resp.status == 422
    assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == "dead"


async def test_times_in_any_rfc3339_spelling(app_client: TestClient) -> None:
    """`since`/`until` are `format: date-time` (RFC 3339), which lets `T` and `Z` be written in
    lower case, as pydantic reads them: `...02.5z` was 422. Each spelling below is the same instant."""
    sid = (await create_session(app_client))["session_id"]
    for i in range(3):
        await _ok(await app_client.post(f"/api/sessions/{sid}/events", json={"event_type": "E", "data": {"i": i}}), 201)
    events = (await _ok(await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": "E"})))["events"]
    middle = events[1]["timestamp"]  # 2026-12-07T06:23:02.661105Z
    for spelling in (middle, middle[:-1] + "z", middle.replace("T", "t"), middle.replace("T", "t")[:-1] + "z"):
        for name, count in (("since", 2), ("until", 1)):
            listing = await _ok(
                await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": "E", name: spelling})
            )
            assert listing["total"] == count, (name, spelling)
        logs = await app_client.get("/api/observability/logs", params={"since": spelling})
        assert logs.status == 200, (spelling, await logs.text())
    key = await app_client.post("/api/auth/keys", json={"expires_at": "2999-01-01t00:00:00z"})
    assert (await _ok(key, 201))["expires_at"] == "2999-01-01T00:00:00.000000Z"


async def test_an_unknown_id_parameter_is_ignored_as_any_unknown_parameter(app_client: TestClient) -> None:
    """Unknown query parameters are ignored (README "Errors"; FastAPI ignores them), an `*_id`
    one too: `GET /api/health?session_id=a/b` was 422. A route's own `*_id` parameter is still
    checked as every identifier is."""
    sid = (await create_session(app_client))["session_id"]
    for path in ("/api/health", "/api/sessions", f"/api/sessions/{sid}", f"/api/sessions/{sid}/events", "/api/config"):
        resp = await app_client.get(path, params={"session_id": "a/b", "batch_id": "..", "trace_id": "x y"})
        assert resp.status == 200, (path, await resp.text())
    # No route, or not this method: 404 and 405 as for any request, not 422 for the parameter.
    assert (await app_client.get("/api/nope", params={"session_id": "a/b"})).status == 404
    assert (await app_client.put("/api/sessions", params={"session_id": "a/b"})).status == 405
    for path, name in (("/api/engines", "session_id"), (f"/api/sessions/{sid}/commands", "batch_id")):
        resp = await app_client.get(path, params={name: "a/b"})
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == name, path


async def test_a_forks_at_seq_is_refused_in_the_words_of_an_integer(app_client: TestClient) -> None:
    """`at_seq` is an integer in the document, and its refusals said `float` (`Expected `float`
    >= 0.0`, `Expected `float | null`, got `str``): they speak of an integer now, as for every
    other integer field."""
    sid = (await create_session(app_client))["session_id"]
    for at_seq, words in ((-1, "Expected `int` >= 0"), (2**53, "Expected `int` <= 9007199254740991"), ("3", "`int")):
        resp = await app_client.post(f"/api/sessions/{sid}/fork", json={"at_seq": at_seq})
        details = assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]
        assert details["field"] == "at_seq" and words in details["issue"] and "float" not in details["issue"], details
