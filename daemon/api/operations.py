"""The API's operations, described for ``GET /openapi.json`` (api/openapi.py generates the
document from them, the route table and the protocol's endpoint table): per (method, path)
the summary, tag, query/header parameters and description. What an endpoint is (method, path,
request and response models, error codes, operationId) is protocol/endpoints.py's; validation
rules are the protocol's annotated types (protocol/grammar.py), which the request models use
and JSON Schema reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web
from llmgine_daemon.api.apidocs import ASSETS
from llmgine_daemon.protocol import (
    COMMAND_STATUSES,
    SESSION_TOKEN_HEADER,
    UNFINISHED_STATUSES,
    ErrorCode,
)
from llmgine_daemon.protocol.grammar import (
    EVENT_LIST_TYPE_PATTERN,
    HANDLER_PATH_TYPE_PATTERN,
    TRACE_ID_PATTERN,
    Id,
    SecretName,
)

routes = web.RouteTableDef()

# -- the building blocks ---------------------------------------------------------------------

MAX_INT = 2**63 - 1  # SQLite's INTEGER


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    location: str = "query"  # query | header | path
    required: bool = False

    def to_openapi(self) -> dict[str, Any]:
        param: dict[str, Any] = {"name": self.name, "in": self.location, "schema": self.schema}
        if self.location == "query":
            # `?limit=` is not given (not anyOf [schema, ""]: clients typed that `number | string`)
            param["allowEmptyValue"] = True
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


# The identifier rule (protocol.grammar.Id) of path ids and *_id query parameters.
ID = msgspec.json.schema(Id)


def _list_of(values: tuple[str, ...]) -> str:
    one = "|".join(values)
    return rf"^\s*({one})\s*(,\s*({one})\s*)*,?\s*$"


LIMIT = Param("limit", _int(1, 1000, 50), "page size")
OFFSET = Param("offset", _int(0, MAX_INT, 0), "items to skip")
# The lists the daemon holds whole (each bounded by a setting): every item unless limit is given.
PAGE = (Param("limit", _int(1, 1000), "page size (default: all of them)"), OFFSET)
WAIT = Param(
    "wait",
    {"type": "number", "minimum": 0, "maximum": 300},
    "hold the answer up to this many seconds for the work to finish (or `Prefer: wait=N`)",
)
# Preferences the server does not know are ignored (RFC 7240), so any value is acceptable.
PREFER = Param("Prefer", {"type": "string"}, "RFC 7240 `wait=N`, a preference: over 300 waits 300", location="header")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[ -~]+$"},
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
    "approval_id": (ID, "an approval id (ApprovalRequested's approval_id)"),
    "event_id": (ID, "an event id"),
    "engine_id": (ID, "an engine id"),
    "handler_id": (ID, "a handler id"),
    "key_id": (ID, "an API key id (12 hex digits)"),
    "name": (ID, "a tool's name (an MCP server's tools: SERVER.tool), or an MCP server's"),
    "type": (
        {"type": "string", "pattern": HANDLER_PATH_TYPE_PATTERN},
        "a command type or event type (`*`: the every-event handler)",
    ),
    "trace_id": ({"type": "string", "pattern": TRACE_ID_PATTERN}, "32 hex digits"),
    "webhook_id": (ID, "a webhook id"),
    "schedule_id": (ID, "a schedule id"),
    "secret": (msgspec.json.schema(SecretName), "a secret's name: an environment variable's, e.g. OPENAI_API_KEY"),
    "asset": ({"type": "string", "enum": sorted(ASSETS)}, "a vendored file"),
}

# Every operation may answer these (the guard, the error envelope, the store).
COMMON_ERRORS = (
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMITED,
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.SHUTTING_DOWN,
    ErrorCode.STORAGE_BUSY,
    ErrorCode.STORAGE_DAMAGED,
)
# ... and those with a body these.
BODY_ERRORS = (
    ErrorCode.INVALID_JSON,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.INSUFFICIENT_STORAGE,
)


@dataclass(frozen=True)
class Op:
    """How the document describes one endpoint of protocol.endpoints (which holds its
    method, path, models and error codes)."""

    summary: str
    tag: str
    params: tuple[Param, ...] = ()  # query and header parameters (path ones: PATH_SCHEMAS)
    description: str = ""
    public: bool = False  # no credential (guard.OPEN_PATHS)
    content_type: str | tuple[str, ...] = "application/json"
    stream: bool = False  # WebSocket / SSE: never ends, not fuzzed
    # A success answer's schema when it is more than the endpoint's model says.
    schemas: dict[int, dict[str, Any]] = field(default_factory=dict)


def _openai_tools() -> dict[str, Any]:
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "required": ["name", "description", "parameters"],
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    }


def _mcp_ops(scope: str) -> dict[tuple[str, str], Op]:
    prefix = "/api/sessions/{session_id}/mcp-servers" if scope == "session" else "/api/mcp-servers"
    where = "in a session" if scope == "session" else "for every session (global)"
    return {
        ("POST", prefix): Op(
            f"Register an MCP tool server {where}",
            "tools",
            description="`command` (+ `args`): a stdio server the daemon starts, supervises "
            "(restarted with backoff) and stops with its scope, in the sandbox unless `trusted`; "
            "`url`: a streamable-HTTP server on a host of `mcp.allowed_hosts`. `env` values may "
            "be `secret:NAME` (a secret of `llmgine secret`). Its tools become the session's "
            "tools `NAME.tool`. Answers once the first connection succeeded or failed "
            "(`mcp.start_timeout`). A session token may register HTTP servers, stdio ones only "
            "with `mcp.session_token_stdio`, trusted ones never. A taken name is 409 CONFLICT.",
            params=(Param("replace", {"type": "boolean", "default": False}, "replace a server of that name"),),
        ),
        ("GET", prefix): Op(f"List MCP servers {where}", "tools", params=PAGE),
        ("GET", f"{prefix}/{{name}}"): Op("Get an MCP server: status, restarts, tools", "tools"),
        ("DELETE", f"{prefix}/{{name}}"): Op("Remove an MCP server (its process is stopped)", "tools"),
        ("GET", f"{prefix}/{{name}}/tools"): Op("List an MCP server's tools", "tools", params=PAGE),
    }


def _handler_ops(scope: str) -> dict[tuple[str, str], Op]:
    prefix = "/api/sessions/{session_id}/handlers" if scope == "session" else "/api/handlers"
    where = "in this session" if scope == "session" else "for every session (a session's own wins)"
    return {
        ("POST", f"{prefix}/commands"): Op(
            f"Register a command handler {where}",
            "handlers",
            description="`handler_function` is Python source defining one function "
            "`(command) -> result`; it is checked and run in the sandbox, never in "
            "the daemon. One command handler per type and scope: 409 CONFLICT "
            "(`replace=true` replaces it). A session token gets 403 unless "
            "`sandbox.session_token_registration` is set.",
            params=(Param("replace", {"type": "boolean", "default": False}, "replace the type's handler"),),
        ),
        ("POST", f"{prefix}/events"): Op(
            f"Register an event handler {where}",
            "handlers",
            description="`event_type` may be `*` (every event). Handlers run by `priority` "
            "(lower first); a failing one becomes an `EventHandlerFailed` event.",
            params=(Param("replace", {"type": "boolean", "default": False}, "remove the type's event handlers first"),),
        ),
        ("GET", prefix): Op(
            f"List handlers {where}", "handlers", params=(Param("kind", _enum("command", "event")), *PAGE)
        ),
        ("GET", f"{prefix}/{{handler_id}}"): Op("Get one handler, with its source", "handlers"),
        ("DELETE", f"{prefix}/commands/{{type}}"): Op("Unregister a command handler", "handlers"),
        ("DELETE", f"{prefix}/events/{{type}}"): Op("Unregister the event handlers of a type", "handlers"),
    }


OPERATIONS: dict[tuple[str, str], Op] = {
    # -- system ----------------------------------------------------------------------------
    ("GET", "/api/health"): Op(
        "Health check",
        "system",
        public=True,
        description="Never needs a credential. `status`: `healthy`, "
        "`degraded` (the database was not reachable at the last try, requests answer 503; or the last write"
        " found the disk full, writes answer 507) or `shutting_down`.",
    ),
    ("GET", "/api/status"): Op("Daemon status: version, uptime, listeners, storage, counts", "system"),
    ("GET", "/api/config"): Op(
        "The effective configuration, each value with its source",
        "system",
        description="Secrets are shown as `********`.",
    ),
    ("POST", "/api/shutdown"): Op(
        "Graceful shutdown",
        "system",
        description="Answers 202, then stops accepting connections, lets in-flight requests finish and exits.",
    ),
    ("GET", "/openapi.json"): Op("This document (OpenAPI 3.1)", "system"),
    ("GET", "/docs"): Op("Swagger UI", "system", public=True, content_type="text/html"),
    ("GET", "/redoc"): Op("ReDoc", "system", public=True, content_type="text/html"),
    ("GET", "/docs/static/{asset}"): Op(
        "The documentation pages' scripts and styles (vendored, served offline)",
        "system",
        public=True,
        content_type=("application/javascript", "text/css", "image/png"),
    ),
    # -- sessions --------------------------------------------------------------------------
    ("POST", "/api/sessions"): Op(
        "Create a session",
        "sessions",
        params=(
            Param(
                "if_exists",
                _enum("create", "reuse", "error"),
                "when an active session already has `name`: `create` another (default), `reuse` "
                "it (200, no `session_token`), or `error` (409 CONFLICT); without `name`, a session is created",
            ),
        ),
        description="An empty body is fine. The answer carries `session_token` (once): a "
        "credential that opens only this session.",
    ),
    ("GET", "/api/sessions"): Op(
        "List sessions, newest first", "sessions", params=(LIMIT, OFFSET, Param("status", _enum("active", "closed")))
    ),
    ("GET", "/api/sessions/{session_id}"): Op("Get a session with its counts", "sessions"),
    ("DELETE", "/api/sessions/{session_id}"): Op(
        "End a session (or delete it with `purge=true`)",
        "sessions",
        params=(Param("purge", {"type": "boolean", "default": False}, "delete the session and everything in it"),),
        description="Ending cancels queued commands, stops engines, removes tools and handlers "
        "and records `SessionEnded`; ending an ended session is harmless.",
    ),
    ("POST", "/api/sessions/{session_id}/fork"): Op(
        "Fork a session at an event seq",
        "sessions",
        description="A new session with the original's engines (same type, model and "
        "configuration; new ids), their conversation memory as it stood right after event "
        "`at_seq` (default: now), and its tools and handlers. Its first event is "
        "`SessionForked` {from_session_id, at_seq, engines: {original id: new id}, tools, "
        "handlers}; the original is not touched. The answer carries the new session's "
        "`session_token` (once). A session token may not fork (403). docs/agents.md.",
        params=(
            Param(
                "if_exists",
                _enum("create", "error"),
                "`error`: 409 CONFLICT when an active session already has the fork's `name` (default `create`)",
            ),
        ),
    ),
    ("GET", "/api/sessions/{session_id}/approvals"): Op(
        "List tool calls waiting for approval",
        "approvals",
        params=(
            Param("status", _enum("pending", "approved", "denied", "expired", "cancelled", "all"), "default pending"),
            *PAGE,
        ),
        description="A ToolChat engine that wants to run a tool needing approval records an "
        "`ApprovalRequested` event and its command waits (`waiting_approval`) for a decision. "
        "docs/agents.md.",
    ),
    ("POST", "/api/sessions/{session_id}/approvals/{approval_id}"): Op(
        "Approve or deny a tool call",
        "approvals",
        description="`{decision: approve|deny, reason?, arguments?}`: approving may replace the "
        "arguments (checked against the tool's schema). A denial goes back to the model as the "
        "tool's result, with the reason. Recorded as an `ApprovalDecided` event (who, when, "
        "what). Already decided (or expired): 409 CONFLICT.",
    ),
    ("POST", "/api/sessions/{session_id}/token"): Op(
        "Mint a session token",
        "auth",
        description="Another token for the same session (the session's own token may mint "
        "one too). At most `security.limits.max_tokens_per_session` live tokens "
        "per session (409 LIMIT_REACHED); tokens end with their session. All tokens "
        "of a session share one rate-limit bucket.",
    ),
    # -- commands --------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/commands"): Op(
        "Execute a command",
        "commands",
        params=(WAIT, PREFER, IDEMPOTENCY_KEY),
        description="202 while queued or executing; 200 with the finished record when `wait` "
        "was given and it finished in time. No handler: 404 HANDLER_NOT_FOUND and "
        "nothing is queued. `metadata.priority` (high|normal|low) and "
        "`metadata.timeout` (seconds) are honoured; `metadata.retries`, `metadata.backoff` and "
        "`metadata.retry_on` retry a failed attempt after a delay. With `after` (command ids of any session "
        "the caller may see) it is stored `blocked` until they ended (404 COMMAND_NOT_FOUND "
        "for an unknown one, 400 DEPENDENCY_CYCLE for a cycle).",
    ),
    ("GET", "/api/sessions/{session_id}/commands"): Op(
        "List commands",
        "commands",
        params=(
            LIMIT,
            OFFSET,
            Param(
                "status",
                {"type": "string", "pattern": _list_of(COMMAND_STATUSES)},
                "comma-separated statuses (or the parameter repeated: every value counts)",
            ),
            Param("command_type", {"type": "string"}),
            Param("batch_id", ID),
            Param("dead", {"type": "boolean"}, "only dead letters: failed or timed out after being retried"),
        ),
    ),
    ("POST", "/api/sessions/{session_id}/commands/retry"): Op(
        "Run finished commands again",
        "commands",
        description="The commands named (`command_ids`), or every `failed`/`timed_out` one of "
        "the session (`failed: true`), or its dead letters (`dead: true`), are queued again with "
        "the same id and `attempt` + 1 (a `CommandRetrying` event each). A command that is not "
        "finished, or completed: 409 CONFLICT.",
    ),
    ("GET", "/api/sessions/{session_id}/commands/{command_id}"): Op("Get a command", "commands", params=(WAIT, PREFER)),
    ("POST", "/api/sessions/{session_id}/commands/{command_id}/cancel"): Op(
        "Cancel a queued or executing command", "commands"
    ),
    ("POST", "/api/sessions/{session_id}/commands/batch"): Op(
        "Execute a batch of commands",
        "commands",
        params=(WAIT, PREFER, IDEMPOTENCY_KEY),
        description="Validated all-or-nothing (`details.index` names the bad member).",
    ),
    ("GET", "/api/sessions/{session_id}/batches/{batch_id}"): Op("Get a batch", "commands", params=(WAIT, PREFER)),
    ("POST", "/api/commands/wait"): Op(
        "Wait for commands of any session",
        "commands",
        description="One long request: answers once all the commands (`any`: one of them) "
        "reached one of the `status` values (default: any terminal status) or finished "
        "without, or when `timeout` seconds passed (`done: false`). `batch_id` adds a batch's "
        "commands. A session token may wait only for its own session's commands (others: "
        "404 COMMAND_NOT_FOUND).",
    ),
    ("GET", "/api/commands"): Op(
        "The live queue across sessions",
        "commands",
        params=(
            Param("limit", _int(1, 1000, 100), "page size"),
            Param(
                "status",
                {"type": "string", "pattern": _list_of(UNFINISHED_STATUSES)},
                "comma-separated unfinished statuses, or the parameter repeated (default: all of them)",
            ),
            Param("session_id", ID, "only this session"),
        ),
        description="Unfinished commands of every session (a session token: its own), "
        "oldest first, with their position in their session's queue, how long they waited "
        "and how long they have run; counts per status and what finished in the last minute.",
    ),
    # -- usage -----------------------------------------------------------------------------
    ("GET", "/api/usage"): Op(
        "Token usage and estimated cost, summed",
        "usage",
        params=(
            Param("session_id", ID, "only this session's commands (a session token: required, its own)"),
            Param("since", RELATIVE_TIME, "commands created since: ISO 8601 or a duration ago (15m, 1h, 2d)"),
            Param("by", _enum("model", "engine", "session"), "one group per model, engine or session"),
        ),
        description="Sums of the tokens (prompt, completion, cached) of the model calls engines "
        "made, over commands, with an estimated cost from the price table (`usage.prices` over "
        "the built-in one, docs/agents.md); calls to models without a price count in "
        "`unpriced_tokens`, not in `cost_usd`. A command's, batch's, engine's and session's own "
        "sums are the `usage` of their records.",
    ),
    # -- events ----------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/events"): Op("Publish an event", "events", params=(IDEMPOTENCY_KEY,)),
    ("GET", "/api/sessions/{session_id}/events"): Op(
        "List events",
        "events",
        params=(
            LIMIT,
            OFFSET,
            Param(
                "event_type",
                {"type": "string", "pattern": EVENT_LIST_TYPE_PATTERN},
                "an exact type or a `Prefix*` (`*`: every type); free text, any type user code may publish",
            ),
            Param("after", _int(), "only events with a greater seq (a cursor: pass `next_after`)"),
            Param("since", TIME),
            Param("until", TIME),
            Param("source", _enum("api", "engine", "handler", "bus")),
        ),
    ),
    ("GET", "/api/sessions/{session_id}/events/{event_id}"): Op("Get an event", "events"),
    # -- engines ---------------------------------------------------------------------------
    ("GET", "/api/engines/types"): Op("Engine types and their configuration", "engines"),
    ("POST", "/api/engines"): Op(
        "Create an engine",
        "engines",
        description="The engine handles its type's command (`DummyEngine` → `DummyEngineCommand`) in its session.",
    ),
    ("GET", "/api/engines"): Op(
        "List engines",
        "engines",
        params=(
            LIMIT,
            OFFSET,
            Param("session_id", ID),
            Param("status", _enum("active", "initialized", "stopped"), "`active`: every engine that is not stopped"),
        ),
    ),
    ("GET", "/api/engines/{engine_id}"): Op("Get an engine", "engines"),
    ("DELETE", "/api/engines/{engine_id}"): Op("Stop and delete an engine", "engines"),
    ("POST", "/api/engines/{engine_id}/execute"): Op(
        "Execute a prompt on an engine",
        "engines",
        params=(
            Param(
                "wait",
                {"type": "number", "minimum": 0, "maximum": 300, "default": 60},
                "seconds to hold the answer (default 60; 0 answers 202 at once)",
            ),
            PREFER,
            IDEMPOTENCY_KEY,
        ),
        description="Runs as a command in the engine's session.",
    ),
    ("GET", "/api/engines/{engine_id}/messages"): Op(
        "An LLM engine's conversation", "engines", params=(Param("limit", _int(1, 1000, 100)), OFFSET)
    ),
    ("POST", "/api/engines/{engine_id}/reset"): Op("Forget an LLM engine's conversation", "engines"),
    # -- tools -----------------------------------------------------------------------------
    ("POST", "/api/sessions/{session_id}/tools"): Op(
        "Register a tool",
        "tools",
        params=(Param("replace", {"type": "boolean", "default": False}, "replace a tool of that name"),),
        description="`function_code` is Python source defining the function `name`; its "
        "schema is derived from the signature when `parameters` is omitted. The "
        "code is checked in the sandbox (422 when it does not compile). A session "
        "token gets 403 unless `sandbox.session_token_registration` is set.",
    ),
    ("GET", "/api/sessions/{session_id}/tools"): Op(
        "List tools",
        "tools",
        params=(Param("format", _enum("llmgine", "openai"), "`openai`: the list in OpenAI's `tools` format"), *PAGE),
        schemas={200: {"oneOf": [{"$ref": "#/components/schemas/ToolList"}, _openai_tools()]}},
    ),
    ("GET", "/api/sessions/{session_id}/tools/{name}"): Op("Get a tool, with its source", "tools"),
    ("DELETE", "/api/sessions/{session_id}/tools/{name}"): Op("Unregister a tool", "tools"),
    ("POST", "/api/sessions/{session_id}/tools/{name}/execute"): Op(
        "Execute a tool", "tools", description="A tool that raises is still a 200: `error` says how it failed."
    ),
    # -- handlers --------------------------------------------------------------------------
    **_handler_ops("session"),
    **_handler_ops("global"),
    # -- MCP servers -----------------------------------------------------------------------
    **_mcp_ops("session"),
    **_mcp_ops("global"),
    # -- observability ---------------------------------------------------------------------
    ("GET", "/api/observability/logs"): Op(
        "Query logs",
        "observability",
        params=(
            Param("limit", _int(1, 1000, 100)),
            Param(
                "level", _enum("debug", "info", "warning", "warn", "error", "critical", "fatal"), "this level and above"
            ),
            Param("session_id", ID),
            Param("command_id", ID),
            Param("trace_id", ID),
            Param("since", RELATIVE_TIME, "ISO 8601 or a duration ago (15m, 1h, 2d)"),
            Param("until", RELATIVE_TIME),
            Param("q", {"type": "string"}, "text search"),
            Param("after", _int(), "only records with a greater id (`next_after`)"),
        ),
    ),
    ("POST", "/api/observability/logs"): Op("Write a log record", "observability"),
    ("GET", "/api/observability/metrics"): Op(
        "Metrics (counts, p50/p95/p99)", "observability", params=(Param("session_id", ID),)
    ),
    ("GET", "/metrics"): Op("Prometheus metrics", "observability", content_type="text/plain"),
    ("GET", "/api/observability/traces"): Op(
        "Recent traces",
        "observability",
        params=(
            Param("session_id", ID),
            Param("since", RELATIVE_TIME),
            Param("status", _enum("ok", "error")),
            Param("limit", _int(1, 1000, 50)),
        ),
    ),
    ("GET", "/api/observability/traces/{trace_id}"): Op("A trace as a span tree", "observability"),
    # -- the database ----------------------------------------------------------------------
    ("GET", "/api/db/stats"): Op("Database size, tables, row counts and retention", "system"),
    ("POST", "/api/db/vacuum"): Op(
        "VACUUM the database (reclaims the space of deleted rows)",
        "system",
        description="Rewrites the file: writes wait while it runs.",
    ),
    # -- credentials -----------------------------------------------------------------------
    ("POST", "/api/auth/keys"): Op("Create an API key (shown once)", "auth"),
    ("GET", "/api/auth/keys"): Op("List API keys (never the keys)", "auth", params=PAGE),
    ("GET", "/api/auth/keys/{key_id}"): Op("Get an API key's record", "auth"),
    ("DELETE", "/api/auth/keys/{key_id}"): Op("Revoke an API key (closes its WebSockets)", "auth"),
    # -- secrets (daemon/secrets.py) ---------------------------------------------------------
    ("PUT", "/api/secrets/{secret}"): Op(
        "Set a secret the daemon keeps for providers (e.g. OPENAI_API_KEY)",
        "auth",
        description="Stored 0600 in the config directory; never returned or logged. A provider "
        "whose key is in neither the daemon's environment nor the config file "
        "uses the secret named like its key variable (providers.X.api_key_env).",
    ),
    ("GET", "/api/secrets"): Op("List the secrets' names (never their values)", "auth", params=PAGE),
    ("DELETE", "/api/secrets/{secret}"): Op("Delete a secret", "auth"),
    # webhooks and schedules: api/operations_hooks.py (HOOK_OPERATIONS, merged by api/openapi.py);
    # the event streams: api/operations_streams.py (STREAM_OPERATIONS, merged there too)
}

TAGS = [
    ("system", "Health, status, configuration, shutdown, this documentation"),
    ("sessions", "Sessions: conversations whose commands run one at a time"),
    ("commands", "Commands: handled by exactly one handler, queued per session by priority"),
    ("events", "Events: one append-only log with a global `seq`"),
    ("streams", "Live event streams: WebSocket and Server-Sent Events"),
    ("engines", "Engines: DummyEngine and the LLM engines"),
    ("tools", "Tools: Python functions run in the sandbox, and MCP tool servers' tools"),
    ("handlers", "Command and event handlers: Python functions run in the sandbox"),
    ("observability", "Logs, metrics and traces"),
    ("auth", "API keys and session tokens"),
    ("callbacks", "Webhooks and schedules"),
    ("usage", "Token usage and estimated cost of the model calls engines made"),
    ("approvals", "Approval before a tool runs: pending requests and decisions"),
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

**Values.** As FastAPI reads them: an `integer` may be written `26.0` (not `26.5`), in a body
or a query; a query parameter given twice is its last value (`?limit=1&limit=2` is 2), except
the streams' `event_type` and `source`, which take every value.
"""
