"""The API description: ``GET /openapi.json`` (OpenAPI 3.1). The pages that render it,
``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), are api/apidocs.py.

Nothing here is written by hand into the document. It is generated from four sources:

- ``app.router``: which operations exist (a route missing from the endpoint table or from
  ``OPERATIONS`` fails the test suite, so a new endpoint cannot ship undocumented);
- the protocol's endpoint table (protocol/endpoints.py): per operation its operationId,
  request model, response models per status and the error codes it can return;
- ``OPERATIONS`` (api/operations.py): per (method, path) the summary, tag, query/header
  parameters and description;
- the protocol's msgspec models, turned into JSON Schema by ``msgspec.json.schema_components``
  (the same types that decode requests and encode responses, so the schemas cannot drift;
  their validation rules are the annotated types of protocol/grammar.py). Two values are the
  daemon's own and are filled in per app (``_this_daemon``): the engine types it has, and the
  largest timeout it accepts (``sandbox.max_timeout``).

Route modules carry no OpenAPI decorators: describing the API is this module's job alone.

The document follows the same access rules as every other endpoint (any valid credential
may read it, a session token included: guard.ANY_SCOPE_PATHS).
"""

from __future__ import annotations

import logging
import re
import weakref
from typing import Any

import msgspec
from aiohttp import web
from llmgine_daemon import __version__
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.operations import (
    BODY_ERRORS,
    COMMON_ERRORS,
    DESCRIPTION,
    PATH_SCHEMAS,
    TAGS,
    Op,
    Param,
)
from llmgine_daemon.api.operations import OPERATIONS as _OPERATIONS
from llmgine_daemon.api.operations_hooks import HOOK_OPERATIONS
from llmgine_daemon.api.operations_streams import STREAM_OPERATIONS
from llmgine_daemon.protocol import (
    ERROR_STATUS,
    SESSION_TOKEN_HEADER,
    ErrorCode,
    ErrorEnvelope,
    ToolList,
)
from llmgine_daemon.protocol.endpoints import BY_KEY, ENDPOINTS, Endpoint
from llmgine_daemon.protocol.grammar import DEFAULT_MAX_TIMEOUT, MAX_TIMEOUT_SETTING

# Every operation's description: api/operations.py, and api/operations_hooks.py for webhooks
# and schedules.
OPERATIONS = {**_OPERATIONS, **HOOK_OPERATIONS, **STREAM_OPERATIONS}

routes = web.RouteTableDef()
log = logging.getLogger("llmgine.api")

# -- generation --------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_REF = "#/components/schemas/"


_PLAIN = {str: {"type": "string"}, dict: {"type": "object"}}


def _models() -> list[type]:
    found: dict[str, type] = {"ErrorEnvelope": ErrorEnvelope}
    for endpoint in ENDPOINTS:
        for value in (endpoint.request, *endpoint.responses.values()):
            if isinstance(value, type) and value not in _PLAIN:
                found[value.__name__] = value
    found["ToolList"] = ToolList
    return list(found.values())


def _schema_of(value: Any) -> dict[str, Any]:
    if isinstance(value, type) and value in _PLAIN:
        return dict(_PLAIN[value])
    if isinstance(value, type):
        return {"$ref": f"#/components/schemas/{value.__name__}"}
    return dict(value)


def _errors_of(method: str, op: Op, endpoint: Endpoint) -> dict[int, list[str]]:
    codes = [*COMMON_ERRORS, *(BODY_ERRORS if method in ("POST", "PUT", "PATCH") else ()), *endpoint.errors]
    if op.public:
        codes = [c for c in codes if c != ErrorCode.UNAUTHORIZED]
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERROR_STATUS[code], []).append(code)
    return by_status


# Response headers (components.headers), so that a generated client can read them: the two
# every answer carries, the rate limit's where a limit applies, and those of some answers.
# Keyed by component name: (header, schema, required, description). A reference cannot say
# "required" beside it (OpenAPI 3.1), so an optional Retry-After is a component of its own.
_HEADERS: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "X-Request-ID": (
        "X-Request-ID",
        {"type": "string"},
        True,
        "this request's id: the X-Request-ID sent, if it was a plain one, else one the daemon made "
        "(an error's `request_id`, and the daemon log's)",
    ),
    "X-Llmgine-Version": ("X-Llmgine-Version", {"type": "string"}, True, "the daemon's version"),
    "RateLimit": (
        "RateLimit",
        {"type": "string"},
        False,
        'the rate limit left, as the IETF draft has it: `"key";r=REMAINING;t=SECONDS` (when a limit applies)',
    ),
    "RateLimit-Policy": (
        "RateLimit-Policy",
        {"type": "string"},
        False,
        'the rate limit applied: `"key";q=PER_MINUTE;w=60` (when a limit applies)',
    ),
    "Retry-After": ("Retry-After", {"type": "integer", "minimum": 0}, True, "seconds until a retry may succeed"),
    "Retry-After-If-Busy": (
        "Retry-After",
        {"type": "integer", "minimum": 0},
        False,
        "seconds until a retry may succeed (STORAGE_BUSY)",
    ),
    "WWW-Authenticate": (
        "WWW-Authenticate",
        {"type": "string"},
        True,
        'the credential wanted: `Bearer realm="llmgine"`',
    ),
    "Idempotent-Replayed": (
        "Idempotent-Replayed",
        {"type": "string", "enum": ["true"]},
        False,
        "the answer is an earlier request's with the same Idempotency-Key",
    ),
    "Preference-Applied": (
        "Preference-Applied",
        {"type": "string"},
        False,
        "`wait=N`: the Prefer: wait the answer waited for",
    ),
}


# A request header, and the answer's header that says what became of it.
_ANSWERED = (("Idempotency-Key", "Idempotent-Replayed"), ("Prefer", "Preference-Applied"))


def _headers(status: int, op: Op) -> dict[str, Any]:
    """The headers of ``op``'s ``status`` answers, as references to ``_HEADERS``. Every answer
    carries the request id and the version (and the rate limit's, where one applies); an error
    is described with only its own (its envelope has the request id), to keep the document
    small: they are on nearly 800 error answers."""
    if status == 401:
        names = ["WWW-Authenticate"]
    elif status == 429:
        names = ["Retry-After", "RateLimit", "RateLimit-Policy"]
    elif status == 503:
        names = ["Retry-After-If-Busy"]
    elif status >= 300:
        names = []
    else:
        names = ["X-Request-ID", "X-Llmgine-Version", "RateLimit", "RateLimit-Policy"]
        sent = {p.name for p in op.params}
        names += [answer for asked, answer in _ANSWERED if asked in sent]
    return {_HEADERS[n][0]: {"$ref": f"#/components/headers/{n}"} for n in names}


def _operation(method: str, path: str, op: Op, endpoint: Endpoint) -> dict[str, Any]:
    names = _PATH_PARAM.findall(path)
    params = []
    for name in names:
        schema, description = PATH_SCHEMAS.get(name, ({"type": "string"}, ""))
        params.append(Param(name, schema, description, location="path").to_openapi())
    params += [p.to_openapi() for p in op.params]
    responses: dict[str, Any] = {}
    for status, model in endpoint.responses.items():
        model = op.schemas.get(status, model)
        if status == 101:
            responses["101"] = {"description": "Switching Protocols (WebSocket)"}
            continue
        if model is None:
            responses[str(status)] = {"description": "No content" if status == 204 else "OK"}
            continue
        responses[str(status)] = {
            "description": {200: "OK", 201: "Created", 202: "Accepted (still running)"}.get(status, "OK"),
            "content": {
                ctype: {"schema": _schema_of(model)}
                for ctype in ((op.content_type,) if isinstance(op.content_type, str) else op.content_type)
            },
        }
    for status, codes in sorted(_errors_of(method, op, endpoint).items()):
        responses[str(status)] = {
            "description": " | ".join(codes),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        }
    if op.stream:  # a plain GET, neither an upgrade nor Accept: text/event-stream (api/streams.py)
        responses["406"] = {
            "description": "VALIDATION_ERROR",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        }
        responses = dict(sorted(responses.items()))
    for status, response in responses.items():
        headers = _headers(int(status), op) if status != "101" else {}  # 101: the WebSocket's own
        if headers:
            response["headers"] = headers
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if op.description:
        operation["description"] = op.description
    if endpoint.request is not None:
        operation["requestBody"] = {
            "required": endpoint.request_required,
            "content": {"application/json": {"schema": _schema_of(endpoint.request)}},
        }
    if op.public:
        operation["security"] = []
    if op.stream:
        operation["x-llmgine-stream"] = True
    return operation


def _this_daemon(components: dict[str, Any], engine_types: list[str], max_timeout: float) -> None:
    """This daemon's values in the generated schemas: every ``Timeout`` gets its maximum
    (protocol.grammar marks it ``x-llmgine-maximum``), and ``EngineCreate.engine_type`` its
    enum."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop("x-llmgine-maximum", None) == MAX_TIMEOUT_SETTING:
                node["maximum"] = max_timeout
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(components)
    engine_type = components.get("EngineCreate", {}).get("properties", {}).get("engine_type")
    if engine_types and engine_type is not None:
        engine_type["enum"] = engine_types


def _referenced(node: Any, components: dict[str, Any], into: set[str]) -> set[str]:
    """The component names ``node`` refers to, and those they refer to, into ``into``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            name = ref[len(_REF) :]
            if name not in into:
                into.add(name)
                _referenced(components.get(name), components, into)
        for value in node.values():
            _referenced(value, components, into)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, components, into)
    return into


def _struct_classes(models: list[type]) -> dict[str, type]:
    """Every msgspec Struct ``models`` are made of, by name (as schema_components names them)."""
    found: dict[str, type] = {}

    def visit(node: Any) -> None:
        if isinstance(node, tuple):
            for item in node:
                visit(item)
        elif isinstance(node, msgspec.inspect.StructType):
            if node.cls.__name__ not in found:
                found[node.cls.__name__] = node.cls
                for field in node.fields:
                    visit(field.type)
        elif isinstance(node, msgspec.inspect.Type):
            for name in node.__struct_fields__:
                visit(getattr(node, name))

    visit(tuple(msgspec.inspect.multi_type_info(models)))
    return found


def _answers_have_every_field(paths: dict[str, Any], components: dict[str, Any], models: list[type]) -> None:
    """Every field of a response model is in every answer (msgspec encodes defaults too:
    ``"ended_at": null``), so the document says they are all ``required``, as FastAPI's output
    schemas do: a generated client then types ``ended_at`` as ``str | None``, not as maybe
    unset. Request models keep their defaulted fields optional; no model is both (else it would
    need FastAPI's -Input/-Output pair), and a Struct that omits its defaults keeps its list."""
    requests: set[str] = set()
    answers: set[str] = set()
    for ops in paths.values():
        for op in ops.values():
            _referenced(op.get("requestBody"), components, requests)
            _referenced(op["responses"], components, answers)
    classes = _struct_classes(models)
    for name in sorted(answers - requests):
        schema, cls = components[name], classes.get(name)
        if "properties" in schema and cls is not None and not cls.__struct_config__.omit_defaults:
            schema["required"] = list(schema["properties"])


def route_keys(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path) the app serves (HEAD is implied by GET)."""
    keys = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None:
            continue
        keys.add((route.method, resource.canonical))
    return keys


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document for the routes ``app`` serves: what each is from the protocol's
    endpoint table, described by ``OPERATIONS``."""
    served = route_keys(app)
    missing = sorted(served - OPERATIONS.keys() | served - BY_KEY.keys())
    if missing:
        # tests/api/test_endpoints.py fails on this; a running daemon still serves a document.
        log.warning("routes missing from protocol/endpoints.py or api/operations.py: %s", missing)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(served, key=lambda k: (k[1], k[0])):
        op = OPERATIONS.get((method, path)) or Op("(not described yet)", "system")
        endpoint = BY_KEY.get((method, path)) or Endpoint(
            f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}", method, path, {200: dict}
        )
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op, endpoint)
    models = _models()
    _, components = msgspec.json.schema_components(models, ref_template=_REF + "{name}")
    _answers_have_every_field(paths, components, models)
    bus = app.get(BUS)
    _this_daemon(
        components,
        [t.engine_type for t in bus.engines.describe_types()] if bus else [],
        bus.max_timeout if bus else DEFAULT_MAX_TIMEOUT,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llmgine",
            "version": __version__,
            "summary": "The LLMGine message bus over HTTP, WebSocket and Server-Sent Events",
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/", "description": "this daemon (TCP, or http://llmgine over its Unix socket)"}],
        "tags": [{"name": n, "description": d} for n, d in TAGS],
        "paths": paths,
        "components": {
            "schemas": components,
            "headers": {
                name: {"description": d, "required": req, "schema": schema}
                for name, (_, schema, req, d) in _HEADERS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API_KEY_SECRET, a key from `llmgine auth key create`, or a "
                    "session token. Not needed on the Unix socket (the peer's "
                    "uid is checked instead).",
                },
                "sessionToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SESSION_TOKEN_HEADER,
                    "description": "A session's token: opens only that session's "
                    "endpoints and engines (403 elsewhere).",
                },
            },
        },
        "security": [{"bearer": []}, {"sessionToken": []}],
    }


# Built once per app, on first request (the routes and engine types are fixed by then).
_DOCUMENTS: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    app = request.app
    body = _DOCUMENTS.get(app)
    if body is None:
        body = _DOCUMENTS[app] = msgspec.json.encode(build_document(app))
    return web.Response(body=body, content_type="application/json")


def document_json(app: web.Application) -> bytes:
    """The document as served (for tools and tests that have an app but no server)."""
    return msgspec.json.encode(build_document(app))
