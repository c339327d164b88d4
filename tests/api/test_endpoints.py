"""The wire contract is written once (protocol/endpoints.py): a route, an operation of the
OpenAPI document and a Client method that disagree fail here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from llmgine_daemon.api.openapi import OPERATIONS, build_document, route_keys
from llmgine_daemon.protocol import CommandCreate
from llmgine_daemon.protocol.endpoints import BY_KEY, BY_NAME, ENDPOINTS, Endpoint

from llmgine_cli import hot
from llmgine_cli.aclient import _Recorder, _Request
from llmgine_cli.client import Client
from llmgine_cli.client_agents import AgentEndpoints
from llmgine_cli.client_hooks import HookEndpoints

# Client methods that are more than one request (they call the ones checked here) or stream.
COMPOSITE = {"execute", "publish", "events", "tool_deadline", "delete_handlers"}
# Placeholder values for a method's required arguments, by name.
ARGUMENTS: dict[str, Any] = {
    "session_id": "s-1",
    "command_id": "c-1",
    "batch_id": "b-1",
    "approval_id": "a-1",
    "decision": "approve",
    "event_id": "e-1",
    "engine_id": "g-1",
    "key_id": "k-1",
    "handler_id": "h-1",
    "trace_id": "0" * 32,
    "name": "tool",
    "type_": "Some.Type",
    "command_type": "Some.Type",
    "event_type": "Some.Type",
    "prompt": "hi",
    "message": "hello",
    "engine_type": "DummyEngine",
    "model_name": None,
    "function_code": "def tool():\n    return 1\n",
    "handler_function": "def handle(c):\n    return 1\n",
    "parameters": {},
    "metadata": {},
    "data": {},
    "configuration": {},
    "arguments": {},
    "commands": [{"command_type": "Some.Type"}],
    "value": "secret-value",
    "url": "http://127.0.0.1:9/hook",
    "webhook_id": "w-1",
    "schedule_id": "sch-1",
    "command": CommandCreate(command_type="Some.Type"),
}


def test_operation_ids_are_unique_and_name_resource_and_verb() -> None:
    assert len(BY_NAME) == len(ENDPOINTS) == len(BY_KEY)
    for endpoint in ENDPOINTS:
        assert re.fullmatch(
            r"(get|list|create|delete|execute|publish|register|cancel|reset|revoke|"
            r"stream|shutdown|vacuum|set|wait|retry|pause|resume|fork|decide)[A-Z][A-Za-z]*",
            endpoint.name,
        ), endpoint.name


async def test_routes_document_and_table_agree(app_client: TestClient) -> None:
    served = route_keys(app_client.app)
    assert served == BY_KEY.keys(), (
        f"routes not in protocol/endpoints.py: {sorted(served - BY_KEY.keys())}; "
        f"endpoints without a route: {sorted(BY_KEY.keys() - served)}"
    )
    assert served == OPERATIONS.keys(), "describe every route in api/operations.py OPERATIONS"
    doc = build_document(app_client.app)
    seen = set()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            endpoint = BY_KEY[(method.upper(), path)]
            seen.add(endpoint.name)
            assert operation["operationId"] == endpoint.name
            body = operation.get("requestBody")
            if endpoint.request is None:
                assert body is None, endpoint.name
            else:
                assert body["content"]["application/json"]["schema"] == {
                    "$ref": f"#/components/schemas/{endpoint.request.__name__}"
                }, endpoint.name
                assert body["required"] == endpoint.request_required
            success = {int(s) for s in operation["responses"] if int(s) < 400}
            assert success == set(endpoint.responses), endpoint.name
            model = endpoint.response
            if isinstance(model, type) and hasattr(model, "__struct_fields__"):
                schemas = [
                    c["schema"]
                    for s, r in operation["responses"].items()
                    if int(s) < 300
                    for c in r.get("content", {}).values()
                ]
                assert any(f"#/components/schemas/{model.__name__}" in str(s) for s in schemas), endpoint.name
            errors = {
                code
                for s, r in operation["responses"].items()
                if int(s) >= 400
                for code in r["description"].split(" | ")
            }
            assert set(endpoint.errors) <= errors, endpoint.name
            assert [p["name"] for p in operation["parameters"] if p["in"] == "path"] == list(endpoint.params)
    assert seen == BY_NAME.keys()


def _calls(method_name: str) -> list[_Request]:
    """What the Client method sends, recorded (AsyncClient's stand-in), once per scope."""
    recorder = _Recorder(Client("http://127.0.0.1:1"))
    function = getattr(Client, method_name)
    signature = inspect.signature(function)
    required = {
        name: ARGUMENTS[name]
        for name, p in signature.parameters.items()
        if name != "self" and p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    variants = [required]
    if "session_id" in required and "None" in str(signature.parameters["session_id"].annotation):
        variants.append({**required, "session_id": None})  # the global scope (handlers)
    if "kind" in required:
        variants = [{**v, "kind": kind} for v in variants for kind in ("command", "event")]
    if "timeout" in signature.parameters and method_name == "execute_tool":
        variants = [{**v, "timeout": 1.0} for v in variants]  # no tool_deadline look-up
    return [function(recorder, **v) for v in variants]


def _endpoint_of(request: _Request) -> Endpoint:
    found = [
        e
        for e in ENDPOINTS
        if e.method == request.method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", e.path), request.path)
    ]
    assert found, (request.method, request.path)
    return min(found, key=lambda e: len(e.params))  # /api/engines/types before /{engine_id}


def test_client_methods_agree_with_the_table() -> None:
    methods = {
        name
        for name, value in (vars(Client) | vars(HookEndpoints) | vars(AgentEndpoints)).items()
        if inspect.isfunction(value) and not name.startswith("_") and name not in COMPOSITE
    }
    named = {e.client for e in ENDPOINTS if e.client}
    assert methods == named, (
        f"Client methods not in the table: {sorted(methods - named)}; "
        f"in the table, not on Client: {sorted(named - methods)}"
    )
    reached = set()
    for name in sorted(methods):
        for request in _calls(name):
            endpoint = _endpoint_of(request)
            reached.add(endpoint.name)
            assert endpoint.client == name, (name, endpoint.name)
            if endpoint.request is None:
                assert request.body is None, name
            else:
                assert type(request.body) is endpoint.request, (name, type(request.body))
            if request.type_ is not None:
                # (Or a model the client reads more leniently: client.py _AnyHealth.)
                assert request.type_ is endpoint.response or issubclass(request.type_, endpoint.response), name
            else:
                assert None in endpoint.responses.values(), name
    assert reached == {e.name for e in ENDPOINTS if e.client}


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.request is not None], ids=lambda e: e.name)
def test_request_models_forbid_unknown_fields(endpoint: Endpoint) -> None:
    assert endpoint.request.__struct_config__.forbid_unknown_fields, endpoint.name


def test_the_fast_path_spells_only_table_paths() -> None:
    """llmgine_cli/hot.py may not import the protocol (start-up time), so it spells its few
    paths itself: each must be a path of the table."""
    source = Path(hot.__file__).read_text()
    spelled = set(re.findall(r'f?"(/api/[^"?]*)"', source))
    assert spelled, "no paths found in hot.py"
    templates = [re.sub(r"\{[^}]+\}", "[^/]+", e.path) for e in ENDPOINTS]
    for path in spelled:
        concrete = re.sub(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", "x", path)  # f-string fields -> a value
        assert any(re.fullmatch(t, concrete) for t in templates), path
