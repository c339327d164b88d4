"""GET /openapi.json, /docs, /redoc: generated, complete, valid, served offline."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib import resources

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from llmgine_daemon.api.apidocs import ASSETS
from llmgine_daemon.api.openapi import OPERATIONS, build_document, route_keys
from llmgine_daemon.protocol import ERROR_STATUS, ID_PATTERN, TOOL_NAME_PATTERN, TYPE_PATTERN
from llmgine_daemon.protocol.endpoints import ENDPOINTS
from openapi_spec_validator import validate

from tests.api.bus_helpers import session_with_engine
from tests.conftest import assert_envelope


async def test_every_route_is_described(app_client: TestClient) -> None:
    served = route_keys(app_client.app)
    missing = sorted(served - OPERATIONS.keys())
    assert not missing, f"add these routes to OPERATIONS in daemon/api/operations.py: {missing}"
    doc = build_document(app_client.app)
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == served


async def test_document_is_valid_openapi_31(app_client: TestClient) -> None:
    resp = await app_client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    doc = await resp.json()
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1")
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "sessionToken"}
    # ?token= (how an EventSource authenticates) is a parameter of the streams, and only there:
    # not a security scheme, which generated clients fill in on every call they make.
    takes_query_token = {
        (method, path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if any(p["name"] == "token" and p["in"] == "query" for p in op["parameters"])
    }
    assert takes_query_token == {("get", "/api/events/stream"), ("get", "/api/sessions/{session_id}/events/stream")}


async def test_operations_document_their_errors(app_client: TestClient) -> None:
    doc = await (await app_client.get("/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
            assert "500" in errors and "422" in errors, (method, path)
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == envelope
                for code in response["description"].split(" | "):
                    assert code in ERROR_STATUS, code
            public = op.get("security") == []
            assert ("401" in errors) != public, (method, path)
            for param in op["parameters"]:
                assert param["schema"], (method, path, param["name"])
    session = doc["paths"]["/api/sessions/{session_id}"]["get"]
    assert "SESSION_NOT_FOUND" in session["responses"]["404"]["description"]
    create = doc["paths"]["/api/sessions/{session_id}/commands"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CommandCreate"
    }
    assert {"200", "202"} <= create["responses"].keys()


async def test_query_parameters_are_typed_as_what_they_are(app_client: TestClient) -> None:
    """An empty query parameter (`?limit=`) counts as not given: allowEmptyValue says so. As an
    alternative in the schema (anyOf [schema, ""]) it made generated clients type `limit` as
    `number | string` and an enum as any string, and the docs pages show "integer | (integer |
    string)"."""
    doc = await (await app_client.get("/openapi.json")).json()
    query = [
        (path, param)
        for path, ops in doc["paths"].items()
        for op in ops.values()
        for param in op["parameters"]
        if param["in"] == "query"
    ]
    assert len(query) > 50
    for path, param in query:
        assert param["allowEmptyValue"] is True, (path, param)
        assert {"type": "string", "maxLength": 0} not in param["schema"].get("anyOf", []), (path, param)
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/sessions/{session_id}/events"]["get"]["parameters"]}
    assert params["limit"]["type"] == "integer"
    assert params["source"] == {"type": "string", "enum": ["api", "engine", "handler", "bus"]}
    headers = [
        p for ops in doc["paths"].values() for op in ops.values() for p in op["parameters"] if p["in"] != "query"
    ]
    assert headers and not any("allowEmptyValue" in p for p in headers)  # query parameters only


async def test_protocol_rules_reach_the_schemas(app_client: TestClient) -> None:
    doc = await (await app_client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    engine_type = schemas["EngineCreate"]["properties"]["engine_type"]
    assert "DummyEngine" in engine_type["enum"]
    assert schemas["BatchCreate"]["properties"]["commands"]["minItems"] == 1
    assert schemas["CommandCreate"]["additionalProperties"] is False
    # A fork's at_seq is an event seq: an integer in the document, as the daemon judges it (a
    # fraction is 422); it said "number", so a schema-valid 3.5 was refused.
    at_seq = schemas["SessionFork"]["properties"]["at_seq"]["anyOf"][0]
    assert at_seq["type"] == "integer" and at_seq["minimum"] == 0, at_seq
    assert "x-llmgine-integer" not in str(doc)


async def test_grammar_reaches_the_schemas(
    make_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """The request models' annotated types are the document's rules; the timeout maximum is
    this daemon's sandbox.max_timeout."""
    client = await make_client(LLMGINE_SANDBOX_MAX_TIMEOUT="42")
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert schemas["CommandCreate"]["properties"]["command_type"]["pattern"] == TYPE_PATTERN
    assert schemas["EventCreate"]["properties"]["event_type"]["pattern"] == TYPE_PATTERN
    assert schemas["EngineCreate"]["properties"]["session_id"]["pattern"] == ID_PATTERN
    tool_name = schemas["ToolCreate"]["properties"]["name"]["anyOf"][0]
    assert tool_name["pattern"] == TOOL_NAME_PATTERN and tool_name["maxLength"] == 64
    for model in ("ToolCreate", "ToolExecute", "CommandHandlerCreate", "EventHandlerCreate"):
        timeout = schemas[model]["properties"]["timeout"]["anyOf"][0]
        assert timeout["maximum"] == 42 and timeout["exclusiveMinimum"] == 0, model
    assert "x-llmgine-maximum" not in str(doc)
    path_id = doc["paths"]["/api/sessions/{session_id}"]["get"]["parameters"][0]["schema"]
    assert path_id["pattern"] == ID_PATTERN and path_id["maxLength"] == 128


async def test_docs_pages_and_assets(make_client: Callable[..., Awaitable[TestClient]]) -> None:
    """Over TCP the pages and their assets open without a credential; the document does not."""
    client = await make_client(authenticated=False)
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        resp = await client.get(page)
        assert resp.status == 200, page
        assert resp.content_type == "text/html"
        html = await resp.text()
        assert f'src="/docs/static/{script}"' in html
        assert "https://" not in html  # nothing from a CDN
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    for name, content_type in ASSETS.items():
        resp = await client.get(f"/docs/static/{name}")
        assert resp.status == 200, name
        assert resp.content_type == content_type
        assert len(await resp.read()) > 100
    # Not served: the README, and the source maps the bundles' sourceMappingURL comments name
    # (browsers ask for them when their developer tools are open): a plain 404.
    for name in ("README.md", "redoc.standalone.js.map", "swagger-ui.css.map"):
        resp = await client.get(f"/docs/static/{name}")
        assert resp.status == 404, name
        assert_envelope(await resp.json(), "NOT_FOUND")
    resp = await client.get("/openapi.json")
    assert resp.status == 401
    assert_envelope(await resp.json(), "UNAUTHORIZED")


async def test_session_token_may_read_the_document(
    make_client: Callable[..., Awaitable[TestClient]],
) -> None:
    owner = await make_client()
    token = (await (await owner.post("/api/sessions", json={})).json())["session_token"]
    resp = await owner.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200


async def test_over_the_unix_socket(unix_client) -> None:  # type: ignore[no-untyped-def]
    resp = await unix_client.get("/openapi.json")
    assert resp.status == 200
    assert (await unix_client.get("/docs")).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/engines/types",
        "/api/sessions/s1/commands/batch",
        "/api/handlers/commands",
        "/api/sessions/s1/events/stream",
    ],
)
async def test_literal_routes_are_not_ids(app_client: TestClient, path: str) -> None:
    """Found by fuzzing: a literal segment fell through to the {id} route beside it, so
    OPTIONS/DELETE advertised or reached the wrong handler."""
    resp = await app_client.request("PATCH", path)
    assert resp.status == 405
    allowed = set(resp.headers["Allow"].split(", "))
    doc = await (await app_client.get("/openapi.json")).json()
    canonical = {
        "/api/sessions/s1/commands/batch": "/api/sessions/{session_id}/commands/batch",
        "/api/sessions/s1/events/stream": "/api/sessions/{session_id}/events/stream",
    }
    documented = {m.upper() for m in doc["paths"][canonical.get(path, path)]}
    assert allowed - {"HEAD"} == documented


def test_vendored_assets_are_the_released_files() -> None:
    """static/README.md lists the sha256 of every vendored file as released on npm; an edited
    bundle (the sourceMappingURL comment 'stripped' mid-string once left /redoc blank) fails."""
    static = resources.files("llmgine_daemon.api") / "static"
    readme = (static / "README.md").read_text()
    sums = dict((name, digest) for digest, name in re.findall(r"^\| `([0-9a-f]{64})` \| `([^`]+)` \|", readme, re.M))
    vendored = {name for name in ASSETS if name != "docs.js"}
    vendored |= {
        "redoc.LICENSE",
        "redoc.standalone.js.LICENSE.txt",
        "swagger-ui.LICENSE",
        "swagger-ui.NOTICE",
        "swagger-ui-bundle.js.LICENSE.txt",
    }
    assert set(sums) == vendored
    for name, digest in sums.items():
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name


async def test_command_metadata_schema_is_what_the_daemon_checks(app_client: TestClient) -> None:
    """A command's metadata was "any object" in the document while the daemon refuses a bad
    priority, timeout or retry policy (schemathesis: most schema-valid commands and batches were
    422), and a batch member's schema allowed the `after` the daemon refuses there. Each body
    below is valid for the document exactly when the daemon takes it."""
    doc = await (await app_client.get("/openapi.json")).json()

    def valid(model: str, body: dict) -> bool:
        schema = {"$ref": f"#/components/schemas/{model}", "components": doc["components"]}
        return Draft202012Validator(schema).is_valid(body)

    sid, _ = await session_with_engine(app_client)
    command = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "p"}}
    for metadata, accepted in (
        ({"priority": "high", "timeout": 30, "mine": {"any": 1}}, True),
        ({"priority": None, "retries": 2, "backoff": {"type": "fixed", "base": 0.5}, "retry_on": ["X"]}, True),
        ({"priority": "urgent"}, False),
        ({"priority": 5}, False),
        ({"timeout": 0}, False),
        ({"timeout": "30"}, False),
        ({"retries": 101}, False),
        ({"backoff": "linear"}, False),
        ({"backoff": {"type": "fixed", "jitter": 1}}, False),
        ({"retry_on": "X"}, False),
    ):
        body = {**command, "metadata": metadata}
        resp = await app_client.post(f"/api/sessions/{sid}/commands", json=body)
        assert (resp.status < 300) == accepted, (metadata, resp.status, await resp.text())
        assert valid("CommandCreate", body) == accepted, metadata
        batch = {"commands": [body]}
        resp = await app_client.post(f"/api/sessions/{sid}/commands/batch", json=batch)
        assert (resp.status < 300) == accepted, (metadata, resp.status, await resp.text())
        assert valid("BatchCreate", batch) == accepted, metadata
    for after, accepted in (([], True), (["01a24e0a-07ef-7dd1-8a8f-a649d2a451a6"], False)):
        batch = {"commands": [{**command, "after": after}]}
        resp = await app_client.post(f"/api/sessions/{sid}/commands/batch", json=batch)
        assert (resp.status < 300) == accepted, (after, resp.status, await resp.text())
        assert valid("BatchCreate", batch) == accepted, after


_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
_TIME_NAME = re.compile(r"(_at|^timestamp|^start|^next_due|^since|^upcoming)$")


async def test_times_are_date_time_in_the_document_and_one_format_on_the_wire(app_client: TestClient) -> None:
    """The contract's times (`"created_at": "2024-01-01T00:00:00Z"`) are what a FastAPI model's
    datetime fields are: `format: date-time` in the document, so generated clients parse them
    (they were plain strings). And every answer writes them one way, UTC with microseconds and
    a Z: a PostgreSQL daemon's /api/status wrote a node's heartbeat_at as `...06:08:26.166+00:00`."""
    doc = await (await app_client.get("/openapi.json")).json()
    requests = {e.request.__name__ for e in ENDPOINTS if isinstance(e.request, type)}
    plain = []
    for name, schema in doc["components"]["schemas"].items():
        for prop, value in schema.get("properties", {}).items():
            if name in requests or not _TIME_NAME.search(prop):
                continue
            value = value.get("items", value)
            alternatives = [a for a in value.get("anyOf", [value]) if a.get("type") != "null"]
            if not all(a.get("format") == "date-time" for a in alternatives):
                plain.append(f"{name}.{prop}")
    assert not plain, plain
    status = await (await app_client.get("/api/status")).json()
    nodes = status["cluster"]["nodes"]
    assert nodes
    for value in (status["started_at"], *(node["started_at"] for node in nodes)):
        assert _TIME.match(value), value
    for node in nodes:
        assert (
            node["heartbeat_at"] is None
            if status["cluster"]["backend"] == "sqlite"
            else _TIME.match(node["heartbeat_at"])
        )


async def test_answers_list_every_field_as_required(app_client: TestClient) -> None:
    """Every field of an answer is in it, defaults included (`"ended_at": null`), so the document
    lists them all as required, as FastAPI's output schemas do: they were optional, and a
    generated client typed `ended_at` as maybe unset. Request models keep defaulted fields
    optional; a model that leaves out its defaults (a metric series) keeps its own list."""
    doc = await (await app_client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    sid, engine_id = await session_with_engine(app_client)
    command = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "p"}}
    answers = {
        "Session": await (await app_client.get(f"/api/sessions/{sid}")).json(),
        "Command": await (await app_client.post(f"/api/sessions/{sid}/commands?wait=30", json=command)).json(),
        "Engine": await (await app_client.get(f"/api/engines/{engine_id}")).json(),
        "ErrorBody": (await (await app_client.get("/api/sessions/nope")).json())["error"],
    }
    for name, answer in answers.items():
        assert schemas[name]["required"] == list(schemas[name]["properties"]), name
        assert set(answer) == set(schemas[name]["properties"]), name
    assert schemas["SessionCreate"]["required"] == []
    assert schemas["CommandCreate"]["required"] == ["command_type"]
    assert "p99" not in schemas["MetricSeries"]["required"]
