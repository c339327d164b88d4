"""The API's operations, described for ``GET /openapi.json`` (api/openapi.py generates the
document from them, the route table and the protocol's models): per (method, path) the
summary, tag, parameters, request and response models and error codes; plus the validation
rules JSON Schema cannot read off the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from llmgine_daemon.api.apidocs import ASSETS
from llmgine_daemon.protocol import (
    COMMAND_STATUSES,
    SESSION_TOKEN_HEADER,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    Batch,
    BatchCreate,
    Command,
    CommandCreate,
    CommandHandlerCreate,
    CommandList,
    ConfigView,
    DbStats,
    Engine,
    EngineCreate,
    EngineExecute,
    EngineList,
    EngineMessageList,
    EngineReset,
    EngineTypeList,
    ErrorCode,
    Event,
    EventCreate,
    EventHandlerCreate,
    EventList,
    Handler,
    HandlerList,
    Health,
    LogCreate,
    LogList,
    LogRecord,
    MetricsSnapshot,
    Session,
    SessionCreate,
    SessionList,
    SessionTokenCreated,
    ShutdownAccepted,
    Status,
    Tool,
    ToolCreate,
    ToolExecute,
    ToolResult,
    TraceList,
    TraceView,
    VacuumResult,
)

routes = web.RouteTableDef()

# -- the building blocks ---------------------------------------------------------------------

# The identifier rule of api/limits.py (path ids and *_id query parameters).
ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._:\-]{0,127}$"
TYPE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$"  # command and event types
EVENT_TYPE_FILTER = r"^([A-Za-z_][A-Za-z0-9_.:\-]{0,127}|[A-Za-z0-9_.:\-]{0,127}\*)$"
TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_INT = 2**63 - 1  # SQLite's INTEGER


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    location: str = "query"  # query | header | path
    required: bool = False

    def to_openapi(self) -> dict[str, Any]:
        schema = self.schema
        if self.location == "query":
            # Every query parameter given empty (`?limit=`) counts as not given.
            schema = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
        param: dict[str, Any] = {"name": self.name, "in": self.location, "schema": schema}
        if self.description:
            param["description"] = self.description
        if self.required or self.location == "path":
            param["required"] = True
        return param


def _int(minimum: int = 0, maximum: int = MAX_INT, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return schema


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


ID = {"type": "string", "pattern": ID_PATTERN, "maxLength": 128}


def _list_of(values: tuple[str, ...]) -> str:
    one = "|".join(values)
    return rf"^\s*({one})\s*(,\s*({one})\s*)*,?\s*$"

LIMIT = Param("limit", _int(1, 1000, 50), "page size")
OFFSET = Param("offset", _int(0, MAX_INT, 0), "items to skip")
WAIT = Param("wait", {"type": "number", "minimum": 0, "maximum": 300},
             "hold the answer up to this many seconds for the work to finish (or `Prefer: wait=N`)")
# Preferences the server does not know are ignored (RFC 7240), so any value is acceptable.
PREFER = Param("Prefer", {"type": "string"}, "RFC 7240 `wait=N`: as `?wait=N`", location="header")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[ -~]+$"},
    "a retry with the same key, method, path and body returns the first answer "
    "(`Idempotent-Replayed: true`); with another body: 422 IDEMPOTENCY_KEY_REUSED",
    location="header",
)
TIME = {"type": "string", "format": "date-time"}
RELATIVE_TIME = {"anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdwSMHDW]\s*$"}, TIME]}

PATH_SCHEMAS: dict[str, tuple[dict[str, Any], str]] = {
    "session_id": (ID, "a session id"),
    "command_id": (ID, "a command id"),
    "batch_id": (ID, "a batch id"),
    "event_id": (ID, "an event id"),
    "engine_id": (ID, "an engine id"),
    "handler_id": (ID, "a handler id"),
    "key_id": (ID, "an API key id (12 hex digits)"),
    "name": ({"type": "string", "pattern": TOOL_NAME_PATTERN}, "a tool name"),
    "type": ({"type": "string", "pattern": r"^(\*|(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._:\-]{0,127})$"},
             "a command type or event type (`*`: the every-event handler)"),
    "trace_id": ({"type": "string", "pattern": r"^[0-9a-fA-F]{32}$"}, "32 hex digits"),
    "asset": ({"type": "string", "enum": sorted(ASSETS)}, "a vendored file"),
}

# Every operation may answer these (the guard, the error middleware, the store).
COMMON_ERRORS = (
    ErrorCode.VALIDATION_ERROR, ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL_ERROR, ErrorCode.SHUTTING_DOWN,
    ErrorCode.STORAGE_BUSY,
)
# ... and those with a body these.
BODY_ERRORS = (
    ErrorCode.INVALID_JSON, ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.REQUEST_TIMEOUT, ErrorCode.INSUFFICIENT_STORAGE,
)
SESSION = (ErrorCode.SESSION_NOT_FOUND,)
WRITE_IN_SESSION = (ErrorCode.SESSION_NOT_FOUND, ErrorCode.SESSION_CLOSED)


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    responses: dict[int, Any]  # status -> protocol model, None (no body) or a raw schema dict
    request: type | None = None
    request_required: bool = True
    params: tuple[Param, ...] = ()
    errors: tuple[str, ...] = ()
    description: str = ""
    public: bool = False  # no credential (guard.OPEN_PATHS)
    content_type: str | tuple[str, ...] = "application/json"
    stream: bool = False  # WebSocket / SSE: never ends, not fuzzed


def _openai_tools() -> dict[str, Any]:
    return {"type": "array", "items": {
        "type": "object", "required": ["type", "function"],
        "properties": {"type": {"const": "function"}, "function": {
            "type": "object", "required": ["name", "description", "parameters"],
            "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                           "parameters": {"type": "object"}}}}}}


def _handler_ops(scope: str) -> dict[tuple[str, str], Op]:
    prefix = "/api/sessions/{session_id}/handlers" if scope == "session" else "/api/handlers"
    where = "in this session" if scope == "session" else "for every session (a session's own wins)"
    errors = WRITE_IN_SESSION if scope == "session" else ()
    found = SESSION if scope == "session" else ()
    return {
        ("POST", f"{prefix}/commands"): Op(
            f"Register a command handler {where}", "handlers", {201: Handler},
            CommandHandlerCreate,
            errors=(*errors, ErrorCode.CONFLICT, ErrorCode.SANDBOX_UNAVAILABLE),
            description="`handler_function` is Python source defining one function "
                        "`(command) -> result`; it is checked and run in the sandbox, never in "
                        "the daemon. One command handler per type and scope: 409 CONFLICT. "
                        "A session token gets 403 unless "
                        "`sandbox.session_token_registration` is set."),
        ("POST", f"{prefix}/events"): Op(
            f"Register an event handler {where}", "handlers", {201: Handler}, EventHandlerCreate,
            errors=(*errors, ErrorCode.SANDBOX_UNAVAILABLE),
            description="`event_type` may be `*` (every event). Handlers run by `priority` "
                        "(lower first); a failing one becomes an `EventHandlerFailed` event."),
        ("GET", prefix): Op(
            f"List handlers {where}", "handlers", {200: HandlerList},
            params=(Param("kind", _enum("command", "event")),), errors=found),
        ("GET", f"{prefix}/{{handler_id}}"): Op(
            "Get one handler, with its source", "handlers", {200: Handler},
            errors=(*found, ErrorCode.HANDLER_NOT_FOUND)),
        ("DELETE", f"{prefix}/commands/{{type}}"): Op(
            "Unregister a command handler", "handlers", {204: None},
            errors=(*found, ErrorCode.HANDLER_NOT_FOUND)),
        ("DELETE", f"{prefix}/events/{{type}}"): Op(
            "Unregister the event handlers of a type", "handlers", {204: None},
            errors=(*found, ErrorCode.HANDLER_NOT_FOUND)),
    }


STREAM_DESCRIPTION = """\
Live events, in `seq` order, as **WebSocket** (send `Upgrade: websocket`; subprotocol
`llmgine.events.v1`, or the older `llmgine`; browsers pass their credential as a second one,
`llmgine.bearer.<TOKEN>`) or as **Server-Sent
Events** (a plain GET with `Accept: text/event-stream`). Query: `event_type` (repeatable or
comma-separated, `Prefix*`), `source`, `since` (a seq, an ISO time or `now`). A client that
reconnects with the last `seq` it saw (`since=SEQ`, or SSE's `Last-Event-ID`) misses nothing
and sees nothing twice. Messages: `hello` (the start point), `event` (an Event), `live`
(caught up), `lagging` (this subscriber fell behind; it catches up from the store), `end`
(the session ended). See docs/streams.md."""

STREAM_PARAMS = (
    Param("event_type", {"type": "string"}, "event types, comma-separated or repeated; `Prefix*`"),
    Param("source", {"type": "string"}, "event sources, comma-separated or repeated"),
    Param("since", {"type": "string", "pattern": r"^(now|[0-9]+|\d{4}-\d\d-\d\d.*)$"},
          "a seq (resume after it), an ISO 8601 time, or `now` (default)"),
    Param("Last-Event-ID", {"type": "string", "pattern": r"^[0-9]+$"},
          "SSE resume: the last seq seen", location="header"),
)

OPERATIONS: dict[tuple[str, str], Op] = {
    # -- system ----------------------------------------------------------------------------
    ("GET", "/api/health"): Op("Health check", "system", {200: Health}, public=True,
                               description="Never needs a credential."),
    ("GET", "/api/status"): Op("Daemon status: version, uptime, listeners, storage, counts",
                               "system", {200: Status}),
    ("GET", "/api/config"): Op("The effective configuration, each value with its source",
                               "system", {200: ConfigView},
                               description="Secrets are shown as `********`."),
    ("POST", "/api/shutdown"): Op("Graceful shutdown", "system", {202: ShutdownAccepted},
                                  description="Answers 202, then stops accepting connections, "
                                              "lets in-flight requests finish and exits."),
    ("GET", "/openapi.json"): Op("This document (OpenAPI 3.1)", "system", {200: {"type": "object"}}),
    ("GET", "/docs"): Op("Swagger UI", "system", {200: {"type": "string"}}, public=True,
                         content_type="text/html"),
    ("GET", "/redoc"): Op("ReDoc", "system", {200: {"type": "string"}}, public=True,
                          content_type="text/html"),
    ("GET", "/docs/static/{asset}"): Op(
        "The documentation pages' scripts and styles (vendored, served offline)", "system",
        {200: {"type": "string"}}, public=True,
        content_type=("application/javascript", "text/css", "image/png"),
        errors=(ErrorCode.NOT_FOUND,)),
    # -- sessions --------------------------------------------------------------------------
    ("POST", "/api/sessions"): Op(
        "Create a session", "sessions", {201: Session}, SessionCreate, request_required=False,
        errors=(ErrorCode.LIMIT_REACHED,),
        description="An empty body is fine. The answer carries `session_token` (once): a "
                    "credential that opens only this session."),
    ("GET", "/api/sessions"): Op("List sessions, newest first", "sessions", {200: SessionList},
                                 params=(LIMIT, OFFSET, Param("status", _enum("active", "closed")))),
    ("GET", "/api/sessions/{session_id}"): Op("Get a session with its counts", "sessions",
                                              {200: Session}, errors=SESSION),
    ("DELETE", "/api/sessions/{session_id}"): Op(
        "End a session (or delete it with `purge=true`)", "sessions", {200: Session, 204: None},
        params=(Param("purge", {"type": "boolean", "default": False},
                      "delete the session and everything in it"),),
        errors=SESSION,
        description="Ending cancels queued commands, stops engines, removes tools and handlers "
                    "and records `SessionEnded`; ending an ended session is harmless."),
    ("POST", "/api/sessions/{session_id}/token"): Op(
        "Mint a session token", "auth", {201: SessionTokenCreated},
        errors=(*WRITE_IN_SESSION, ErrorCode.LIMIT_REACHED),
        description="Another token for the same session (the session's own token may mint "
                    "one too). At most `security.limits.max_tokens_per_session` live tokens "
                    "per session (409 LIMIT_REACHED); tokens end with their session. All tokens "
                    "of a session share one rate-limit bucket."),
    # -- commands --------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/commands"): Op(
        "Execute a command", "commands", {200: Command, 202: Command}, CommandCreate,
        params=(WAIT, PREFER, IDEMPOTENCY_KEY),
        errors=(*WRITE_IN_SESSION, ErrorCode.HANDLER_NOT_FOUND, ErrorCode.IDEMPOTENCY_KEY_REUSED),
        description="202 while queued or executing; 200 with the finished record when `wait` "
                    "was given and it finished in time. No handler: 404 HANDLER_NOT_FOUND and "
                    "nothing is queued. `metadata.priority` (high|normal|low) and "
                    "`metadata.timeout` (seconds) are honoured."),
    ("GET", "/api/sessions/{session_id}/commands"): Op(
        "List commands", "commands", {200: CommandList},
        params=(LIMIT, OFFSET,
                Param("status", {"type": "string", "pattern": _list_of(COMMAND_STATUSES)},
                      "comma-separated statuses"),
                Param("command_type", {"type": "string"}),
                Param("batch_id", ID)),
        errors=SESSION),
    ("GET", "/api/sessions/{session_id}/commands/{command_id}"): Op(
        "Get a command", "commands", {200: Command}, params=(WAIT, PREFER),
        errors=(*SESSION, ErrorCode.COMMAND_NOT_FOUND)),
    ("POST", "/api/sessions/{session_id}/commands/{command_id}/cancel"): Op(
        "Cancel a queued or executing command", "commands", {200: Command},
        errors=(*SESSION, ErrorCode.COMMAND_NOT_FOUND, ErrorCode.CONFLICT)),
    ("POST", "/api/sessions/{session_id}/commands/batch"): Op(
        "Execute a batch of commands", "commands", {200: Batch, 202: Batch}, BatchCreate,
        params=(WAIT, PREFER, IDEMPOTENCY_KEY),
        errors=(*WRITE_IN_SESSION, ErrorCode.HANDLER_NOT_FOUND, ErrorCode.IDEMPOTENCY_KEY_REUSED),
        description="Validated all-or-nothing (`details.index` names the bad member)."),
    ("GET", "/api/sessions/{session_id}/batches/{batch_id}"): Op(
        "Get a batch", "commands", {200: Batch}, params=(WAIT, PREFER),
        errors=(*SESSION, ErrorCode.COMMAND_NOT_FOUND, ErrorCode.NOT_FOUND)),
    # -- events ----------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/events"): Op(
        "Publish an event", "events", {201: Event}, EventCreate, params=(IDEMPOTENCY_KEY,),
        errors=(*WRITE_IN_SESSION, ErrorCode.IDEMPOTENCY_KEY_REUSED)),
    ("GET", "/api/sessions/{session_id}/events"): Op(
        "List events", "events", {200: EventList},
        params=(LIMIT, OFFSET,
                Param("event_type", {"type": "string", "pattern": EVENT_TYPE_FILTER},
                      "an exact type or a `Prefix*`"),
                Param("after", _int(), "only events with a greater seq (a cursor: pass `next_after`)"),
                Param("since", TIME), Param("until", TIME),
                Param("source", _enum("api", "engine", "handler", "bus"))),
        errors=SESSION),
    ("GET", "/api/sessions/{session_id}/events/{event_id}"): Op(
        "Get an event", "events", {200: Event}, errors=(*SESSION, ErrorCode.EVENT_NOT_FOUND)),
    ("GET", "/api/sessions/{session_id}/events/stream"): Op(
        "Stream a session's events (WebSocket or SSE)", "streams",
        {101: None, 200: {"type": "string"}}, params=STREAM_PARAMS, errors=(*SESSION, ErrorCode.LIMIT_REACHED),
        description=STREAM_DESCRIPTION, content_type="text/event-stream", stream=True),
    ("GET", "/api/events/stream"): Op(
        "Stream every session's events (WebSocket or SSE)", "streams",
        {101: None, 200: {"type": "string"}}, params=STREAM_PARAMS, errors=(ErrorCode.LIMIT_REACHED,),
        description=STREAM_DESCRIPTION, content_type="text/event-stream", stream=True),
    # -- engines ---------------------------------------------------------------------------
    ("GET", "/api/engines/types"): Op("Engine types and their configuration", "engines",
                                      {200: EngineTypeList}),
    ("POST", "/api/engines"): Op(
        "Create an engine", "engines", {201: Engine}, EngineCreate,
        errors=(*WRITE_IN_SESSION, ErrorCode.CONFLICT, ErrorCode.LIMIT_REACHED),
        description="The engine handles its type's command (`DummyEngine` → "
                    "`DummyEngineCommand`) in its session."),
    ("GET", "/api/engines"): Op(
        "List engines", "engines", {200: EngineList},
        params=(LIMIT, OFFSET, Param("session_id", ID),
                Param("status", _enum("active", "initialized", "stopped"),
                      "`active`: every engine that is not stopped"))),
    ("GET", "/api/engines/{engine_id}"): Op("Get an engine", "engines", {200: Engine},
                                            errors=(ErrorCode.ENGINE_NOT_FOUND,)),
    ("DELETE", "/api/engines/{engine_id}"): Op("Stop and delete an engine", "engines",
                                               {200: Engine}, errors=(ErrorCode.ENGINE_NOT_FOUND,)),
    ("POST", "/api/engines/{engine_id}/execute"): Op(
        "Execute a prompt on an engine", "engines", {200: Command, 202: Command}, EngineExecute,
        params=(Param("wait", {"type": "number", "minimum": 0, "maximum": 300, "default": 60},
                      "seconds to hold the answer (default 60; 0 answers 202 at once)"), PREFER),
        errors=(ErrorCode.ENGINE_NOT_FOUND, ErrorCode.SESSION_CLOSED, ErrorCode.CONFLICT),
        description="Runs as a command in the engine's session."),
    ("GET", "/api/engines/{engine_id}/messages"): Op(
        "An LLM engine's conversation", "engines", {200: EngineMessageList},
        params=(Param("limit", _int(1, 1000, 100)), OFFSET), errors=(ErrorCode.ENGINE_NOT_FOUND,)),
    ("POST", "/api/engines/{engine_id}/reset"): Op(
        "Forget an LLM engine's conversation", "engines", {200: EngineReset},
        errors=(ErrorCode.ENGINE_NOT_FOUND,)),
    # -- tools -----------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/tools"): Op(
        "Register a tool", "tools", {201: Tool}, ToolCreate,
        params=(Param("replace", {"type": "boolean", "default": False}, "replace a tool of that name"),),
        errors=(*WRITE_IN_SESSION, ErrorCode.CONFLICT, ErrorCode.LIMIT_REACHED,
                ErrorCode.SANDBOX_UNAVAILABLE),
        description="`function_code` is Python source defining the function `name`; its "
                    "schema is derived from the signature when `parameters` is omitted. The "
                    "code is checked in the sandbox (422 when it does not compile). A session "
                    "token gets 403 unless `sandbox.session_token_registration` is set."),
    ("GET", "/api/sessions/{session_id}/tools"): Op(
        "List tools", "tools", {200: {"oneOf": [{"$ref": "#/components/schemas/ToolList"}, _openai_tools()]}},
        params=(Param("format", _enum("llmgine", "openai"),
                      "`openai`: the list in OpenAI's `tools` format"),),
        errors=SESSION),
    ("GET", "/api/sessions/{session_id}/tools/{name}"): Op(
        "Get a tool, with its source", "tools", {200: Tool}, errors=(*SESSION, ErrorCode.TOOL_NOT_FOUND)),
    ("DELETE", "/api/sessions/{session_id}/tools/{name}"): Op(
        "Unregister a tool", "tools", {204: None}, errors=(*SESSION, ErrorCode.TOOL_NOT_FOUND)),
    ("POST", "/api/sessions/{session_id}/tools/{name}/execute"): Op(
        "Execute a tool", "tools", {200: ToolResult}, ToolExecute, request_required=False,
        errors=(*WRITE_IN_SESSION, ErrorCode.TOOL_NOT_FOUND, ErrorCode.SANDBOX_UNAVAILABLE),
        description="A tool that raises is still a 200: `error` says how it failed."),
    # -- handlers --------------------------------------------------------------------------
    **_handler_ops("session"),
    **_handler_ops("global"),
    # -- observability ---------------------------------------------------------------------
    ("GET", "/api/observability/logs"): Op(
        "Query logs", "observability", {200: LogList},
        params=(Param("limit", _int(1, 1000, 100)),
                Param("level", _enum("debug", "info", "warning", "warn", "error", "critical", "fatal"),
                      "this level and above"),
                Param("session_id", ID), Param("command_id", ID), Param("trace_id", ID),
                Param("since", RELATIVE_TIME, "ISO 8601 or a duration ago (15m, 1h, 2d)"),
                Param("until", RELATIVE_TIME), Param("q", {"type": "string"}, "text search"),
                Param("after", _int(), "only records with a greater id (`next_after`)"))),
    ("POST", "/api/observability/logs"): Op("Write a log record", "observability",
                                            {201: LogRecord}, LogCreate),
    ("GET", "/api/observability/metrics"): Op(
        "Metrics (counts, p50/p95/p99)", "observability", {200: MetricsSnapshot},
        params=(Param("session_id", ID),), errors=SESSION),
    ("GET", "/metrics"): Op("Prometheus metrics", "observability", {200: {"type": "string"}},
                            content_type="text/plain", errors=(ErrorCode.NOT_FOUND,)),
    ("GET", "/api/observability/traces"): Op(
        "Recent traces", "observability", {200: TraceList},
        params=(Param("session_id", ID), Param("since", RELATIVE_TIME),
                Param("status", _enum("ok", "error")), Param("limit", _int(1, 1000, 50)))),
    ("GET", "/api/observability/traces/{trace_id}"): Op(
        "A trace as a span tree", "observability", {200: TraceView}, errors=(ErrorCode.NOT_FOUND,)),
    # -- the database ----------------------------------------------------------------------
    ("GET", "/api/db/stats"): Op("Database size, tables, row counts and retention", "system",
                                 {200: DbStats}),
    ("POST", "/api/db/vacuum"): Op(
        "VACUUM the database (reclaims the space of deleted rows)", "system", {200: VacuumResult},
        description="Rewrites the file: writes wait while it runs."),
    # -- credentials -----------------------------------------------------------------------
    ("POST", "/api/auth/keys"): Op(
        "Create an API key (shown once)", "auth", {201: ApiKeyCreated}, ApiKeyCreate,
        request_required=False),
    ("GET", "/api/auth/keys"): Op("List API keys (never the keys)", "auth", {200: ApiKeyList}),
    ("GET", "/api/auth/keys/{key_id}"): Op("Get an API key's record", "auth", {200: ApiKeyInfo},
                                          errors=(ErrorCode.KEY_NOT_FOUND,)),
    ("DELETE", "/api/auth/keys/{key_id}"): Op(
        "Revoke an API key (closes its WebSockets)", "auth", {200: ApiKeyInfo},
        errors=(ErrorCode.KEY_NOT_FOUND,)),
}

TAGS = [
    ("system", "Health, status, configuration, shutdown, this documentation"),
    ("sessions", "Sessions: conversations whose commands run one at a time"),
    ("commands", "Commands: handled by exactly one handler, queued per session by priority"),
    ("events", "Events: one append-only log with a global `seq`"),
    ("streams", "Live event streams: WebSocket and Server-Sent Events"),
    ("engines", "Engines: DummyEngine and the LLM engines"),
    ("tools", "Tools: Python functions run in the sandbox"),
    ("handlers", "Command and event handlers: Python functions run in the sandbox"),
    ("observability", "Logs, metrics and traces"),
    ("auth", "API keys and session tokens"),
]

DESCRIPTION = f"""\
The LLMGine message bus as a local daemon (`llmgined`). Every endpoint is JSON; every error
is one envelope: `{{"error": {{"code", "message", "details"}}, "timestamp", "request_id"}}`.
Every answer carries `X-Request-ID` (yours, if you sent one) and `X-Llmgine-Version`.

**Connecting.** By default the daemon listens only on a Unix socket (0600 in a 0700
directory), where the peer's uid must be the daemon's own and no credential is needed:
`curl --unix-socket $XDG_RUNTIME_DIR/llmgine/llmgined.sock http://llmgine/api/status`.
Over TCP every endpoint but `/api/health` (and the HTML of `/docs` and `/redoc`) needs
`Authorization: Bearer KEY` (API_KEY_SECRET or a key from `llmgine auth key create`) or
`{SESSION_TOKEN_HEADER}: TOKEN` (opens one session only); Host and Origin are checked.

**Waiting.** Commands and engine executions answer 202 at once unless asked to wait:
`?wait=N` or `Prefer: wait=N` (N ≤ 300) holds the answer until the work finished (200).
"""


# Rules the daemon checks beyond the models' types (bus/ and api/ validation), added to the
# generated component schemas so clients and fuzzers know them. (model, field) -> keywords.
TIMEOUT = {"exclusiveMinimum": 0, "maximum": 3600}
CODE = {"pattern": r"\S", "maxLength": 256 * 1024}  # Python source: not blank
FIELD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("CommandCreate", "command_type"): {"pattern": TYPE_PATTERN},
    ("EventCreate", "event_type"): {"pattern": TYPE_PATTERN},
    # bus/usercode_handlers.py: 1 to 128 characters without spaces; no wildcard for commands.
    ("CommandHandlerCreate", "command_type"): {"pattern": r"^[^\s*]{1,128}$"},
    ("CommandHandlerCreate", "handler_function"): CODE,
    ("CommandHandlerCreate", "timeout"): TIMEOUT,
    ("EventHandlerCreate", "event_type"): {"pattern": r"^\S{1,128}$"},
    ("EventHandlerCreate", "handler_function"): CODE,
    ("EventHandlerCreate", "timeout"): TIMEOUT,
    ("EventHandlerCreate", "priority"): {"minimum": -(2**31), "maximum": 2**31 - 1},
    ("ToolCreate", "name"): {"pattern": TOOL_NAME_PATTERN},
    ("ToolCreate", "function_code"): CODE,
    ("ToolCreate", "timeout"): TIMEOUT,
    ("ToolExecute", "timeout"): TIMEOUT,
    ("BatchCreate", "commands"): {"minItems": 1},
    ("LogCreate", "message"): {"minLength": 1},
    ("ApiKeyCreate", "name"): {"maxLength": 100},
    ("ApiKeyCreate", "expires_in"): {"minimum": 1, "maximum": 10 * 366 * 86400},
    ("ApiKeyCreate", "expires_at"): {"format": "date-time"},
    ("EngineCreate", "session_id"): {"pattern": ID_PATTERN},
}


def apply_rules(components: dict[str, Any], engine_types: list[str],
                max_timeout: float = 3600.0) -> None:
    """``max_timeout``: sandbox.max_timeout, the largest timeout this daemon accepts."""
    rules = dict(FIELD_RULES)
    for key, keywords in FIELD_RULES.items():
        if keywords is TIMEOUT:
            rules[key] = {**TIMEOUT, "maximum": max_timeout}
    if engine_types:
        rules[("EngineCreate", "engine_type")] = {"enum": engine_types}
    for (model, name), keywords in rules.items():
        prop = components.get(model, {}).get("properties", {}).get(name)
        if prop is None:
            continue
        # Optional fields are anyOf [T, null]: the rule belongs to the T branch.
        target = next((b for b in prop.get("anyOf", ()) if b.get("type") != "null"), prop)
        target.update(keywords)
