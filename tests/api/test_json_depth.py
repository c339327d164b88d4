"""One nesting rule for every JSON body: at most MAX_JSON_DEPTH (64) levels of objects and
arrays, the body itself being level 1; deeper is 422 VALIDATION_ERROR naming the limit. The
issue's case: an event nested 970 deep was stored (and crashed the CLI rendering it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llmgine_daemon.api.util import MAX_JSON_DEPTH, json_too_deep
from llmgine_daemon.protocol.endpoints import ENDPOINTS

from tests.conftest import assert_envelope, create_session


def nested(levels: int) -> Any:
    """``levels`` arrays inside each other ([] is one level)."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def deep_text(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def assert_too_deep(body: dict) -> None:
    error = assert_envelope(body, "VALIDATION_ERROR")
    assert error["details"]["max_depth"] == MAX_JSON_DEPTH
    assert str(MAX_JSON_DEPTH) in error["details"]["issue"]


def test_depth_counting():
    assert MAX_JSON_DEPTH == 64
    assert not json_too_deep(json.dumps({"a": nested(63)}).encode())  # 1 + 63
    assert json_too_deep(json.dumps({"a": nested(64)}).encode())
    assert not json_too_deep(deep_text(64)) and json_too_deep(deep_text(65))
    # Brackets inside strings (escaped quotes included) are text, not structure.
    text = json.dumps({"s": '\\"' + "[{" * 500 + '"', "t": "]]]" * 100, "a": nested(10)}).encode()
    assert not json_too_deep(text)
    # Many shallow containers are fine; depth is what counts.
    assert not json_too_deep(json.dumps([[[1]] * 5000, {"a": [{"b": [1]}] * 5000}]).encode())
    assert json_too_deep(json.dumps([[[1]] * 50, nested(70)]).encode())


async def test_the_limit_and_one_past_it(app_client):
    sid = (await create_session(app_client))["session_id"]
    events = f"/api/sessions/{sid}/events"
    # event data: body 1, data 2, then the arrays.
    resp = await app_client.post(events, json={"event_type": "Deep", "data": {"a": nested(62)}})
    assert resp.status == 201, await resp.text()
    resp = await app_client.post(events, json={"event_type": "Deep", "data": {"a": nested(63)}})
    assert resp.status == 422
    assert_too_deep(await resp.json())
    resp = await app_client.post(events, json={"event_type": "Deep", "metadata": {"a": nested(63)}})
    assert_too_deep(await resp.json())
    # session metadata
    resp = await app_client.post("/api/sessions", json={"metadata": {"a": nested(62)}})
    assert resp.status == 201
    resp = await app_client.post("/api/sessions", json={"metadata": {"a": nested(63)}})
    assert_too_deep(await resp.json())
    # command parameters (checked before the handler is looked up)
    resp = await app_client.post(
        f"/api/sessions/{sid}/commands", json={"command_type": "Nope", "parameters": {"a": nested(63)}}
    )
    assert_too_deep(await resp.json())


async def test_the_issue_970_deep_event_is_refused_and_not_stored(app_client):
    sid = (await create_session(app_client))["session_id"]
    body = b'{"event_type": "Deep", "data": {"a": ' + deep_text(970) + b"}}"
    resp = await app_client.post(f"/api/sessions/{sid}/events", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert_too_deep(await resp.json())
    listing = await (await app_client.get(f"/api/sessions/{sid}/events", params={"event_type": "Deep"})).json()
    assert listing["events"] == []


async def test_tool_arguments(app_client):
    sid = (await create_session(app_client))["session_id"]
    code = "def echo(x: list) -> int:\n    return 1\n"
    resp = await app_client.post(f"/api/sessions/{sid}/tools", json={"name": "echo", "function_code": code})
    assert resp.status == 201, await resp.text()
    path = f"/api/sessions/{sid}/tools/echo/execute"
    resp = await app_client.post(path, json={"arguments": {"x": nested(62)}})
    assert resp.status == 200, await resp.text()
    resp = await app_client.post(path, json={"arguments": {"x": nested(63)}})
    assert_too_deep(await resp.json())


def _concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_every_route_with_a_json_body_applies_the_rule(app_client):
    """Every operation that takes a body (new ones included, from the endpoint table)."""
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post("/api/engines", json={"engine_type": "DummyEngine", "session_id": sid})
    engine_id = (await resp.json())["engine_id"]
    ids = {
        "session_id": sid,
        "engine_id": engine_id,
        "name": "nope",
        "command_id": "nope",
        "secret": "SOME_KEY",
        "approval_id": "nope",
    }
    checked = []
    for endpoint in ENDPOINTS:
        if endpoint.request is None:
            continue
        method, path = endpoint.key
        url = _concrete(path, ids)
        assert "{" not in url, url
        for body in (b'{"x": ' + deep_text(70) + b"}", b'{"x": ' + deep_text(5000) + b"}"):
            resp = await app_client.request(method, url, data=body, headers={"Content-Type": "application/json"})
            assert resp.status == 422, (method, path, resp.status, await resp.text())
            assert_too_deep(await resp.json())
        checked.append(path)
    assert len(checked) >= 12, checked


@pytest.mark.parametrize(
    "body", [b'{"event_type": "E", "data": {"a": [[[', b'{"event_type": "E", "data": {"a": ' + b"[" * 100]
)
async def test_malformed_deep_text_is_still_invalid_json(app_client, body):
    sid = (await create_session(app_client))["session_id"]
    resp = await app_client.post(f"/api/sessions/{sid}/events", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "INVALID_JSON")
