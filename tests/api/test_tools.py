"""Spec section 5: tools, with real worker processes."""

from __future__ import annotations

import textwrap

import pytest
from llmgine_daemon.api.keys import BUS

from tests.conftest import assert_envelope, create_session

GET_WEATHER = textwrap.dedent('''
    async def get_weather(location: str):
        """Get weather information for a location"""
        print("looking up", location)
        return {"location": location, "temperature_c": 21, "conditions": "sunny"}
''')


async def register(client, sid, **body):
    return await client.post(f"/api/sessions/{sid}/tools", json=body)


async def events_of(client, sid, event_type):
    rows = await client.server.app[BUS].store.fetchall(
        "SELECT data FROM events WHERE session_id = ? AND event_type = ? ORDER BY seq",
        (sid, event_type),
    )
    import json

    return [json.loads(r[0]) for r in rows]


async def test_get_weather_end_to_end(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await register(
        app_client,
        sid,
        name="get_weather",
        description="Get weather information for a location",
        parameters={"location": {"type": "string", "description": "City name"}},
        function_code=GET_WEATHER,
    )
    assert resp.status == 201, await resp.text()
    tool = await resp.json()
    assert tool["parameters"] == {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City name"}},
        "required": ["location"],
        "additionalProperties": False,
    }
    assert tool["is_async"] is True

    listing = await (await app_client.get(f"/api/sessions/{sid}/tools")).json()
    assert listing["total"] == 1 and listing["tools"][0]["name"] == "get_weather"
    assert listing["tools"][0]["function_code"] is None
    openai = await (await app_client.get(f"/api/sessions/{sid}/tools?format=openai")).json()
    assert openai == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get weather information for a location",
                "parameters": tool["parameters"],
            },
        }
    ]
    one = await (await app_client.get(f"/api/sessions/{sid}/tools/get_weather")).json()
    assert one["function_code"] == GET_WEATHER

    resp = await app_client.post(
        f"/api/sessions/{sid}/tools/get_weather/execute", json={"arguments": {"location": "Melbourne"}}
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["result"] == {"location": "Melbourne", "temperature_c": 21, "conditions": "sunny"}
    assert result["error"] is None and result["tool_name"] == "get_weather"
    assert result["arguments"] == {"location": "Melbourne"}
    assert result["output"] == "looking up Melbourne\n" and result["duration_ms"] > 0
    executed = await events_of(app_client, sid, "ToolExecuted")
    assert len(executed) == 1 and executed[0]["call_id"] == result["call_id"]
    assert executed[0]["result"]["location"] == "Melbourne"

    resp = await app_client.delete(f"/api/sessions/{sid}/tools/get_weather")
    assert resp.status == 204
    resp = await app_client.post(
        f"/api/sessions/{sid}/tools/get_weather/execute", json={"arguments": {"location": "Melbourne"}}
    )
    assert resp.status == 404
    assert_envelope(await resp.json(), "TOOL_NOT_FOUND")


async def test_schema_derived_from_signature_and_docstring(app_client):
    sid = (await create_session(app_client))["session_id"]
    code = textwrap.dedent('''
        from typing import Literal

        def convert(amount: float, unit: Literal["c", "f"] = "c", tags: list[str] | None = None) -> float:
            """Convert a temperature.

            Args:
                amount: the value to convert
                unit (str): target unit
            """
            return amount * 9 / 5 + 32 if unit == "f" else amount
    ''')
    resp = await register(app_client, sid, name="convert", function_code=code)
    assert resp.status == 201, await resp.text()
    tool = await resp.json()
    assert tool["description"] == "Convert a temperature."
    assert tool["is_async"] is False
    props = tool["parameters"]["properties"]
    assert props["amount"] == {"type": "number", "description": "the value to convert"}
    assert props["unit"] == {"enum": ["c", "f"], "type": "string", "description": "target unit", "default": "c"}
    assert props["tags"] == {"type": ["array", "null"], "items": {"type": "string"}, "default": None}
    assert tool["parameters"]["required"] == ["amount"]
    result = await (
        await app_client.post(
            f"/api/sessions/{sid}/tools/convert/execute", json={"arguments": {"amount": 100, "unit": "f"}}
        )
    ).json()
    assert result["result"] == 212


async def test_registration_errors(app_client):
    sid = (await create_session(app_client))["session_id"]
    resp = await register(app_client, sid, name="broken", function_code="def broken(:\n    pass\n")
    assert resp.status == 422
    error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert error["details"]["reason"] == "SYNTAX_ERROR"
    assert error["details"]["line"] == 1 and error["details"]["column"] == 12

    resp = await register(app_client, sid, name="missing", function_code="def other():\n    return 1\n")
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["reason"] == "FUNCTION_NOT_FOUND"

    resp = await register(app_client, sid, name="x" * 65, function_code="def f(): pass")
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "name"
    resp = await register(app_client, sid, name="not-ident", function_code="def f(): pass")
    assert resp.status == 422

    resp = await register(
        app_client, sid, name="boom", function_code="raise RuntimeError('at import')\ndef boom(): pass\n"
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["reason"] == "CODE_ERROR"

    ok = "def dup():\n    return 1\n"
    assert (await register(app_client, sid, name="dup", function_code=ok)).status == 201
    resp = await register(app_client, sid, name="dup", function_code=ok)
    assert resp.status == 409
    assert_envelope(await resp.json(), "CONFLICT")
    resp = await app_client.post(
        f"/api/sessions/{sid}/tools?replace=true", json={"name": "dup", "function_code": "def dup():\n    return 2\n"}
    )
    assert resp.status == 201
    result = await (await app_client.post(f"/api/sessions/{sid}/tools/dup/execute", json={})).json()
    assert result["result"] == 2

    resp = await register(app_client, "no-such-session", name="t", function_code=ok)
    assert resp.status == 404
    assert_envelope(await resp.json(), "SESSION_NOT_FOUND")


async def test_arguments_validated_before_running(app_client):
    sid = (await create_session(app_client))["session_id"]
    await register(app_client, sid, name="get_weather", function_code=GET_WEATHER)
    url = f"/api/sessions/{sid}/tools/get_weather/execute"
    resp = await app_client.post(url, json={"arguments": {}})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "arguments.location"
    resp = await app_client.post(url, json={"arguments": {"location": 3}})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "arguments.location"
    resp = await app_client.post(url, json={"arguments": {"location": "x", "extra": 1}})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "arguments.extra"
    assert await events_of(app_client, sid, "ToolExecuted") == []


async def test_arguments_too_costly_to_check_are_refused_not_checked_for_minutes(app_client):
    """``items`` times ``anyOf`` (or a long ``enum``/``required``) multiplies the checks: a
    40 KB schema and 150 KB of arguments held the event loop for over a minute (every client
    waited). Past a budget of checks the arguments are 422, before anything runs."""
    sid = (await create_session(app_client))["session_id"]
    failing = [{"type": "string"}] * 999
    costly = {
        "anyof": {"anyOf": [*failing, {"type": "integer"}]},
        "enum": {"enum": ["x"] * 999 + [0]},
    }
    for name, items in costly.items():
        schema = {"type": "object", "properties": {"xs": {"type": "array", "items": items}}}
        code = f"def {name}(xs):\n    return len(xs)\n"
        resp = await register(app_client, sid, name=name, parameters=schema, function_code=code)
        assert resp.status == 201, await resp.text()
        resp = await app_client.post(
            f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": {"xs": [0] * 1000}}
        )
        assert resp.status == 422, (name, await resp.text())
        error = assert_envelope(await resp.json(), "VALIDATION_ERROR")
        assert "too costly" in error["details"]["issue"], error
        # The same schema with a few items is checked (and runs) as before.
        resp = await app_client.post(f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": {"xs": [0] * 5}})
        assert resp.status == 200 and (await resp.json())["result"] == 5, await resp.text()


async def test_exceptions_and_bad_results_are_results(app_client):
    sid = (await create_session(app_client))["session_id"]
    code = textwrap.dedent("""
        def fails(kind: str):
            if kind == "raise":
                raise ValueError("no such city")
            if kind == "exit":
                raise SystemExit(3)
            if kind == "set":
                return {1, 2}
            return float("nan")
    """)
    await register(app_client, sid, name="fails", function_code=code)
    url = f"/api/sessions/{sid}/tools/fails/execute"
    out = await (await app_client.post(url, json={"arguments": {"kind": "raise"}})).json()
    assert out["result"] is None
    assert out["error"]["code"] == "EXECUTION_FAILED"
    assert out["error"]["details"]["type"] == "ValueError"
    assert out["error"]["details"]["message"] == "no such city"
    assert 'raise ValueError("no such city")' in out["error"]["details"]["traceback"]
    assert "sandbox/worker.py" not in out["error"]["details"]["traceback"]
    assert "sandbox/child.py" not in out["error"]["details"]["traceback"]
    out = await (await app_client.post(url, json={"arguments": {"kind": "exit"}})).json()
    assert out["error"]["details"]["type"] == "SystemExit"
    out = await (await app_client.post(url, json={"arguments": {"kind": "set"}})).json()
    assert out["error"]["code"] == "INVALID_RESULT" and "set" in out["error"]["message"]
    out = await (await app_client.post(url, json={"arguments": {"kind": "nan"}})).json()
    assert out["error"]["code"] == "INVALID_RESULT"
    failed = await events_of(app_client, sid, "ToolExecuted")
    assert len(failed) == 4 and all(e["error"] for e in failed)


async def test_tools_survive_restart(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    await register(client, sid, name="get_weather", function_code=GET_WEATHER, timeout=5)
    await client.close()
    client = await make_client()
    tool = await (await client.get(f"/api/sessions/{sid}/tools/get_weather")).json()
    assert tool["timeout"] == 5 and tool["parameters"]["required"] == ["location"]
    out = await (
        await client.post(f"/api/sessions/{sid}/tools/get_weather/execute", json={"arguments": {"location": "Hobart"}})
    ).json()
    assert out["result"]["location"] == "Hobart"


async def test_closing_the_session_drops_its_tools(app_client):
    sid = (await create_session(app_client))["session_id"]
    await register(app_client, sid, name="get_weather", function_code=GET_WEATHER)
    await app_client.delete(f"/api/sessions/{sid}")
    resp = await app_client.get(f"/api/sessions/{sid}/tools/get_weather")
    assert resp.status == 404
    resp = await register(app_client, sid, name="get_weather", function_code=GET_WEATHER)
    assert resp.status == 409
    assert_envelope(await resp.json(), "SESSION_CLOSED")


async def test_tools_and_session_metrics_list_in_one_order_on_every_backend(
    request: pytest.FixtureRequest, make_client, database_url
) -> None:
    """Tools are listed by name and a session's metric series by type in code-point order (as
    SQLite compares text) on PostgreSQL too: ORDER BY there follows the database's collation,
    and on a server with a locale (the postgres Docker image's en_US.utf8) `_x, alpha, Alpha2,
    beta, Zeta` came back instead of `Alpha2, Zeta, _x, alpha, beta`."""
    env = {}
    if database_url is not None:
        env["DATABASE_URL"] = request.getfixturevalue("pg_server").new_database(icu_locale="en-US")
    client = await make_client(**env)
    sid = (await create_session(client))["session_id"]
    names = ["beta", "Zeta", "_x", "alpha", "Alpha2", "a_b", "ab"]
    for name in names:
        resp = await register(client, sid, name=name, function_code=f"def {name}():\n    return 1\n")
        assert resp.status == 201, await resp.text()
        assert (await client.post(f"/api/sessions/{sid}/events", json={"event_type": name})).status == 201
    listed = (await (await client.get(f"/api/sessions/{sid}/tools")).json())["tools"]
    assert [t["name"] for t in listed] == sorted(names)
    fork = await (await client.post(f"/api/sessions/{sid}/fork", json={})).json()
    assert fork["tools"] == sorted(names)
    metrics = (await (await client.get("/api/observability/metrics", params={"session_id": sid})).json())["metrics"]
    published = next(m for m in metrics if m["name"] == "events_published_total")
    types = [s["labels"]["type"] for s in published["series"]]
    assert types == sorted(types) and set(names) <= set(types)
