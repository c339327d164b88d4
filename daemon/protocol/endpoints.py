"""The endpoint table: every operation of the API, once.

Per operation: its name (the OpenAPI ``operationId``: resource and verb, ``createSession``),
method, path, response model per status, request model, the error codes it may answer
beyond the ones every operation may (api/operations.py COMMON_ERRORS; SESSION_NOT_FOUND is
added by ``Endpoint`` to every path under a session), and the ``Client`` method that calls it
(llmgine_cli/client.py).

Who reads it: the OpenAPI document (api/openapi.py, with api/operations.py's prose and
parameters), the ``Client`` (each method names its endpoint: the path, the method and the
models come from here), and tests/api/test_endpoints.py, which fails when a route, an
operation of the document and a client method disagree. The route handlers keep their
aiohttp decorators (some paths carry a regex there, `{command_id:(?!batch$)...}`); the test
holds them to this table.

The row type is ``Endpoint`` (endpoint.py, re-exported here); the rows of webhooks and
schedules are in endpoints_hooks.py and appended to ``ENDPOINTS`` below.

A response of ``str``/``dict`` is a body that is not a protocol model (HTML, Prometheus text,
this document); ``None`` is no body (204; 101 for a WebSocket upgrade).

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

from llmgine_daemon.protocol.base import ErrorCode as E
from llmgine_daemon.protocol.bus import (
    Approval,
    ApprovalDecision,
    ApprovalList,
    Batch,
    BatchCreate,
    Command,
    CommandCreate,
    CommandList,
    Engine,
    EngineCreate,
    EngineExecute,
    EngineList,
    EngineMessageList,
    EngineReset,
    EngineTypeList,
    Event,
    EventCreate,
    EventList,
    Fork,
    Session,
    SessionCreate,
    SessionFork,
    SessionList,
    UsageReport,
)
from llmgine_daemon.protocol.endpoint import Endpoint as Endpoint
from llmgine_daemon.protocol.endpoints_hooks import HOOK_ENDPOINTS
from llmgine_daemon.protocol.lifecycle import CommandRetry, CommandWait, CommandWaitResult, QueueView
from llmgine_daemon.protocol.mcp import McpServer, McpServerCreate, McpServerList
from llmgine_daemon.protocol.system import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    ConfigView,
    DbStats,
    Health,
    LogCreate,
    LogList,
    LogRecord,
    MetricsSnapshot,
    SecretInfo,
    SecretList,
    SecretSet,
    SessionTokenCreated,
    ShutdownAccepted,
    Status,
    TraceList,
    TraceView,
    VacuumResult,
)
from llmgine_daemon.protocol.usercode import (
    CommandHandlerCreate,
    EventHandlerCreate,
    Handler,
    HandlerList,
    Tool,
    ToolCreate,
    ToolExecute,
    ToolList,
    ToolResult,
)

ENDPOINTS: tuple[Endpoint, ...] = (
    # -- system ------------------------------------------------------------------------------
    Endpoint("getHealth", "GET", "/api/health", {200: Health}, client="health"),
    Endpoint("getStatus", "GET", "/api/status", {200: Status}, client="status"),
    Endpoint("getConfig", "GET", "/api/config", {200: ConfigView}, client="config"),
    Endpoint("shutdownDaemon", "POST", "/api/shutdown", {202: ShutdownAccepted}, client="shutdown"),
    Endpoint("getOpenApiDocument", "GET", "/openapi.json", {200: dict}, client="openapi"),
    Endpoint("getSwaggerUi", "GET", "/docs", {200: str}),
    Endpoint("getRedoc", "GET", "/redoc", {200: str}),
    Endpoint("getDocsAsset", "GET", "/docs/static/{asset}", {200: str}, errors=(E.NOT_FOUND,)),
    # -- sessions ----------------------------------------------------------------------------
    Endpoint(
        "createSession",
        "POST",
        "/api/sessions",
        {201: Session, 200: Session},
        SessionCreate,
        request_required=False,
        errors=(E.LIMIT_REACHED, E.CONFLICT),
        client="create_session",
    ),
    Endpoint("listSessions", "GET", "/api/sessions", {200: SessionList}, client="list_sessions"),
    Endpoint("getSession", "GET", "/api/sessions/{session_id}", {200: Session}, client="get_session"),
    Endpoint(
        "deleteSession", "DELETE", "/api/sessions/{session_id}", {200: Session, 204: None}, client="delete_session"
    ),
    Endpoint(
        "forkSession",
        "POST",
        "/api/sessions/{session_id}/fork",
        {201: Fork},
        SessionFork,
        request_required=False,
        errors=(E.LIMIT_REACHED, E.CONFLICT),
        client="fork_session",
    ),
    # -- approvals ---------------------------------------------------------------------------
    Endpoint(
        "listApprovals", "GET", "/api/sessions/{session_id}/approvals", {200: ApprovalList}, client="list_approvals"
    ),
    Endpoint(
        "decideApproval",
        "POST",
        "/api/sessions/{session_id}/approvals/{approval_id}",
        {200: Approval},
        ApprovalDecision,
        errors=(E.NOT_FOUND, E.CONFLICT),
        client="decide_approval",
    ),
    # -- auth --------------------------------------------------------------------------------
    Endpoint(
        "createSessionToken",
        "POST",
        "/api/sessions/{session_id}/token",
        {201: SessionTokenCreated},
        errors=(E.SESSION_CLOSED, E.LIMIT_REACHED),
        client="create_session_token",
    ),
    # -- commands ----------------------------------------------------------------------------
    Endpoint(
        "executeCommand",
        "POST",
        "/api/sessions/{session_id}/commands",
        {200: Command, 202: Command},
        CommandCreate,
        errors=(
            E.SESSION_CLOSED,
            E.HANDLER_NOT_FOUND,
            E.IDEMPOTENCY_KEY_REUSED,
            E.COMMAND_NOT_FOUND,
            E.DEPENDENCY_CYCLE,
            E.LIMIT_REACHED,
        ),
        client="submit_command",
    ),
    Endpoint("listCommands", "GET", "/api/sessions/{session_id}/commands", {200: CommandList}, client="list_commands"),
    Endpoint(
        "getCommand",
        "GET",
        "/api/sessions/{session_id}/commands/{command_id}",
        {200: Command},
        errors=(E.COMMAND_NOT_FOUND,),
        client="get_command",
    ),
    Endpoint(
        "cancelCommand",
        "POST",
        "/api/sessions/{session_id}/commands/{command_id}/cancel",
        {200: Command},
        errors=(E.COMMAND_NOT_FOUND, E.CONFLICT),
        client="cancel_command",
    ),
    Endpoint(
        "retryCommands",
        "POST",
        "/api/sessions/{session_id}/commands/retry",
        {200: CommandList},
        CommandRetry,
        errors=(E.SESSION_CLOSED, E.COMMAND_NOT_FOUND, E.CONFLICT, E.LIMIT_REACHED),
        client="retry_commands",
    ),
    Endpoint(
        "executeBatch",
        "POST",
        "/api/sessions/{session_id}/commands/batch",
        {200: Batch, 202: Batch},
        BatchCreate,
        errors=(E.SESSION_CLOSED, E.HANDLER_NOT_FOUND, E.IDEMPOTENCY_KEY_REUSED, E.LIMIT_REACHED),
        client="submit_batch",
    ),
    Endpoint(
        "getBatch",
        "GET",
        "/api/sessions/{session_id}/batches/{batch_id}",
        {200: Batch},
        errors=(E.COMMAND_NOT_FOUND, E.NOT_FOUND),
        client="get_batch",
    ),
    Endpoint(
        "waitCommands",
        "POST",
        "/api/commands/wait",
        {200: CommandWaitResult},
        CommandWait,
        errors=(E.COMMAND_NOT_FOUND, E.NOT_FOUND),
        client="wait_commands",
    ),
    Endpoint("listQueue", "GET", "/api/commands", {200: QueueView}, client="queue"),
    # -- events ------------------------------------------------------------------------------
    Endpoint(
        "publishEvent",
        "POST",
        "/api/sessions/{session_id}/events",
        {201: Event},
        EventCreate,
        errors=(E.SESSION_CLOSED, E.IDEMPOTENCY_KEY_REUSED, E.LIMIT_REACHED),
        client="publish_event",
    ),
    Endpoint("listEvents", "GET", "/api/sessions/{session_id}/events", {200: EventList}, client="list_events"),
    Endpoint(
        "getEvent",
        "GET",
        "/api/sessions/{session_id}/events/{event_id}",
        {200: Event},
        errors=(E.EVENT_NOT_FOUND,),
        client="get_event",
    ),
    # -- streams -----------------------------------------------------------------------------
    Endpoint(
        "streamSessionEvents",
        "GET",
        "/api/sessions/{session_id}/events/stream",
        {101: None, 200: str},
        errors=(E.LIMIT_REACHED,),
    ),
    Endpoint("streamEvents", "GET", "/api/events/stream", {101: None, 200: str}, errors=(E.LIMIT_REACHED,)),
    # -- engines -----------------------------------------------------------------------------
    Endpoint("listEngineTypes", "GET", "/api/engines/types", {200: EngineTypeList}, client="engine_types"),
    Endpoint(
        "createEngine",
        "POST",
        "/api/engines",
        {201: Engine},
        EngineCreate,
        errors=(E.SESSION_NOT_FOUND, E.SESSION_CLOSED, E.CONFLICT, E.LIMIT_REACHED),
        client="create_engine",
    ),
    Endpoint("listEngines", "GET", "/api/engines", {200: EngineList}, client="list_engines"),
    # -- usage -------------------------------------------------------------------------------
    Endpoint("getUsage", "GET", "/api/usage", {200: UsageReport}, errors=(E.SESSION_NOT_FOUND,), client="usage"),
    Endpoint(
        "getEngine", "GET", "/api/engines/{engine_id}", {200: Engine}, errors=(E.ENGINE_NOT_FOUND,), client="get_engine"
    ),
    Endpoint(
        "deleteEngine",
        "DELETE",
        "/api/engines/{engine_id}",
        {200: Engine},
        errors=(E.ENGINE_NOT_FOUND,),
        client="delete_engine",
    ),
    Endpoint(
        "executeEngine",
        "POST",
        "/api/engines/{engine_id}/execute",
        {200: Command, 202: Command},
        EngineExecute,
        errors=(E.ENGINE_NOT_FOUND, E.SESSION_CLOSED, E.CONFLICT, E.LIMIT_REACHED, E.IDEMPOTENCY_KEY_REUSED),
        client="execute_engine",
    ),
    Endpoint(
        "listEngineMessages",
        "GET",
        "/api/engines/{engine_id}/messages",
        {200: EngineMessageList},
        errors=(E.ENGINE_NOT_FOUND,),
        client="engine_messages",
    ),
    Endpoint(
        "resetEngine",
        "POST",
        "/api/engines/{engine_id}/reset",
        {200: EngineReset},
        errors=(E.ENGINE_NOT_FOUND,),
        client="reset_engine",
    ),
    # -- tools -------------------------------------------------------------------------------
    Endpoint(
        "registerTool",
        "POST",
        "/api/sessions/{session_id}/tools",
        {201: Tool},
        ToolCreate,
        errors=(E.SESSION_CLOSED, E.CONFLICT, E.LIMIT_REACHED, E.SANDBOX_UNAVAILABLE),
        client="register_tool",
    ),
    Endpoint("listTools", "GET", "/api/sessions/{session_id}/tools", {200: ToolList}, client="list_tools"),
    Endpoint(
        "getTool",
        "GET",
        "/api/sessions/{session_id}/tools/{name}",
        {200: Tool},
        errors=(E.TOOL_NOT_FOUND,),
        client="get_tool",
    ),
    Endpoint(
        "deleteTool",
        "DELETE",
        "/api/sessions/{session_id}/tools/{name}",
        {204: None},
        errors=(E.TOOL_NOT_FOUND,),
        client="delete_tool",
    ),
    Endpoint(
        "executeTool",
        "POST",
        "/api/sessions/{session_id}/tools/{name}/execute",
        {200: ToolResult},
        ToolExecute,
        request_required=False,
        errors=(E.SESSION_CLOSED, E.TOOL_NOT_FOUND, E.SANDBOX_UNAVAILABLE),
        client="execute_tool",
    ),
    # -- handlers ----------------------------------------------------------------------------
    Endpoint(
        "registerCommandHandler",
        "POST",
        "/api/sessions/{session_id}/handlers/commands",
        {201: Handler},
        CommandHandlerCreate,
        errors=(E.SESSION_CLOSED, E.CONFLICT, E.LIMIT_REACHED, E.SANDBOX_UNAVAILABLE),
        client="register_command_handler",
    ),
    Endpoint(
        "registerEventHandler",
        "POST",
        "/api/sessions/{session_id}/handlers/events",
        {201: Handler},
        EventHandlerCreate,
        errors=(E.SESSION_CLOSED, E.LIMIT_REACHED, E.SANDBOX_UNAVAILABLE),
        client="register_event_handler",
    ),
    Endpoint("listHandlers", "GET", "/api/sessions/{session_id}/handlers", {200: HandlerList}, client="list_handlers"),
    Endpoint(
        "getHandler",
        "GET",
        "/api/sessions/{session_id}/handlers/{handler_id}",
        {200: Handler},
        errors=(E.HANDLER_NOT_FOUND,),
        client="get_handler",
    ),
    Endpoint(
        "deleteCommandHandler",
        "DELETE",
        "/api/sessions/{session_id}/handlers/commands/{type}",
        {204: None},
        errors=(E.HANDLER_NOT_FOUND,),
        client="delete_command_handler",
    ),
    Endpoint(
        "deleteEventHandlers",
        "DELETE",
        "/api/sessions/{session_id}/handlers/events/{type}",
        {204: None},
        errors=(E.HANDLER_NOT_FOUND,),
        client="delete_event_handler",
    ),
    Endpoint(
        "registerGlobalCommandHandler",
        "POST",
        "/api/handlers/commands",
        {201: Handler},
        CommandHandlerCreate,
        errors=(E.CONFLICT, E.SANDBOX_UNAVAILABLE),
        client="register_command_handler",
    ),
    Endpoint(
        "registerGlobalEventHandler",
        "POST",
        "/api/handlers/events",
        {201: Handler},
        EventHandlerCreate,
        errors=(E.SANDBOX_UNAVAILABLE,),
        client="register_event_handler",
    ),
    Endpoint("listGlobalHandlers", "GET", "/api/handlers", {200: HandlerList}, client="list_handlers"),
    Endpoint(
        "getGlobalHandler",
        "GET",
        "/api/handlers/{handler_id}",
        {200: Handler},
        errors=(E.HANDLER_NOT_FOUND,),
        client="get_handler",
    ),
    Endpoint(
        "deleteGlobalCommandHandler",
        "DELETE",
        "/api/handlers/commands/{type}",
        {204: None},
        errors=(E.HANDLER_NOT_FOUND,),
        client="delete_command_handler",
    ),
    Endpoint(
        "deleteGlobalEventHandlers",
        "DELETE",
        "/api/handlers/events/{type}",
        {204: None},
        errors=(E.HANDLER_NOT_FOUND,),
        client="delete_event_handler",
    ),
    # -- MCP servers (api/mcp.py) -------------------------------------------------------------
    *(
        endpoint
        for prefix, scope, closed in (
            ("/api/sessions/{session_id}/mcp-servers", "", (E.SESSION_CLOSED,)),
            ("/api/mcp-servers", "Global", ()),
        )
        for endpoint in (
            Endpoint(
                f"register{scope}McpServer",
                "POST",
                prefix,
                {201: McpServer},
                McpServerCreate,
                errors=(*closed, E.CONFLICT, E.LIMIT_REACHED),
                client="register_mcp_server",
            ),
            Endpoint(f"list{scope}McpServers", "GET", prefix, {200: McpServerList}, client="list_mcp_servers"),
            Endpoint(
                f"get{scope}McpServer",
                "GET",
                f"{prefix}/{{name}}",
                {200: McpServer},
                errors=(E.NOT_FOUND,),
                client="get_mcp_server",
            ),
            Endpoint(
                f"delete{scope}McpServer",
                "DELETE",
                f"{prefix}/{{name}}",
                {204: None},
                errors=(E.NOT_FOUND,),
                client="delete_mcp_server",
            ),
            Endpoint(
                f"list{scope}McpServerTools",
                "GET",
                f"{prefix}/{{name}}/tools",
                {200: ToolList},
                errors=(E.NOT_FOUND,),
                client="mcp_server_tools",
            ),
        )
    ),
    # -- observability -----------------------------------------------------------------------
    Endpoint("listLogs", "GET", "/api/observability/logs", {200: LogList}, client="logs"),
    Endpoint("createLog", "POST", "/api/observability/logs", {201: LogRecord}, LogCreate, client="post_log"),
    Endpoint(
        "getMetrics",
        "GET",
        "/api/observability/metrics",
        {200: MetricsSnapshot},
        errors=(E.SESSION_NOT_FOUND,),
        client="metrics",
    ),
    Endpoint("getPrometheusMetrics", "GET", "/metrics", {200: str}, errors=(E.NOT_FOUND,), client="prometheus_metrics"),
    Endpoint("listTraces", "GET", "/api/observability/traces", {200: TraceList}, client="traces"),
    Endpoint(
        "getTrace",
        "GET",
        "/api/observability/traces/{trace_id}",
        {200: TraceView},
        errors=(E.NOT_FOUND,),
        client="trace",
    ),
    # -- system ------------------------------------------------------------------------------
    Endpoint("getDbStats", "GET", "/api/db/stats", {200: DbStats}, client="db_stats"),
    Endpoint("vacuumDb", "POST", "/api/db/vacuum", {200: VacuumResult}, client="db_vacuum"),
    # -- auth --------------------------------------------------------------------------------
    Endpoint(
        "createApiKey",
        "POST",
        "/api/auth/keys",
        {201: ApiKeyCreated},
        ApiKeyCreate,
        request_required=False,
        client="create_key",
    ),
    Endpoint("listApiKeys", "GET", "/api/auth/keys", {200: ApiKeyList}, client="list_keys"),
    Endpoint(
        "getApiKey", "GET", "/api/auth/keys/{key_id}", {200: ApiKeyInfo}, errors=(E.KEY_NOT_FOUND,), client="get_key"
    ),
    Endpoint(
        "revokeApiKey",
        "DELETE",
        "/api/auth/keys/{key_id}",
        {200: ApiKeyInfo},
        errors=(E.KEY_NOT_FOUND,),
        client="revoke_key",
    ),
    # -- secrets -----------------------------------------------------------------------------
    Endpoint(
        "setSecret",
        "PUT",
        "/api/secrets/{secret}",
        {200: SecretInfo},
        SecretSet,
        # CONFLICT: the secrets file is unreadable and must be repaired first (api/secrets.py).
        errors=(E.CONFLICT, E.LIMIT_REACHED),
        client="set_secret",
    ),
    Endpoint("listSecrets", "GET", "/api/secrets", {200: SecretList}, errors=(E.CONFLICT,), client="list_secrets"),
    Endpoint(
        "deleteSecret",
        "DELETE",
        "/api/secrets/{secret}",
        {204: None},
        errors=(E.NOT_FOUND, E.CONFLICT),
        client="delete_secret",
    ),
)

# Webhooks and schedules: their operations are in endpoints_hooks.py.
ENDPOINTS += HOOK_ENDPOINTS

BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}
BY_KEY: dict[tuple[str, str], Endpoint] = {e.key: e for e in ENDPOINTS}
