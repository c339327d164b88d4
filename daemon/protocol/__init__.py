"""Wire models and error codes: the one definition, shared by the daemon and the client.

Only msgspec and the standard library may be imported here: the CLI imports this package on
every invocation. One module per area (``base``: error codes, headers, timestamps;
``grammar``: identifiers and types; ``bus``; ``streams``: the event streams' messages;
``system``; ``usercode``; ``hooks``: webhooks and schedules; ``lifecycle``: waiting and the
queue view; ``mcp``); import the names from the package.

Conventions:
- Timestamps are ISO 8601 UTC strings with microseconds and a ``Z`` suffix; they sort as text.
- Identifiers are UUID strings (version 7: time-ordered, see bus/codec.py); what any id or
  type may look like is ``grammar`` (annotated types, used by the request models).
- Request models use ``forbid_unknown_fields`` so a typo in a field name is a VALIDATION_ERROR,
  not a silently ignored value.
"""

from __future__ import annotations

from llmgine_daemon.protocol.base import (  # noqa: F401
    ERROR_STATUS,
    MAX_JSON_DEPTH,
    REQUEST_ID_HEADER,
    SESSION_TOKEN_HEADER,
    VERSION_HEADER,
    WS_PROTOCOL,
    WS_TOKEN_PROTOCOL_PREFIX,
    CallErrorCode,
    ErrorBody,
    ErrorCode,
    ErrorEnvelope,
    now_iso,
    parse_iso,
    to_iso,
)
from llmgine_daemon.protocol.bus import (  # noqa: F401
    APPROVAL_STATUSES,
    COMMAND_STATUSES,
    EVENT_SOURCES,
    MAX_AFTER,
    PRIORITIES,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    AfterPolicy,
    Approval,
    ApprovalDecision,
    ApprovalList,
    Batch,
    BatchCreate,
    BatchMode,
    Command,
    CommandCreate,
    CommandList,
    CommandStatus,
    Engine,
    EngineConfigField,
    EngineCreate,
    EngineExecute,
    EngineList,
    EngineMessage,
    EngineMessageList,
    EngineReset,
    EngineType,
    EngineTypeList,
    Event,
    EventCreate,
    EventList,
    Fork,
    Session,
    SessionCounts,
    SessionCreate,
    SessionFork,
    SessionList,
    SessionStatus,
    Usage,
    UsageGroup,
    UsageReport,
)
from llmgine_daemon.protocol.grammar import (  # noqa: F401
    ID_PATTERN,
    TOOL_NAME_PATTERN,
    TYPE_PATTERN,
    Id,
    SourceCode,
    Timeout,
    ToolName,
    TypeName,
    valid_id,
)
from llmgine_daemon.protocol.hooks import (  # noqa: F401
    Schedule,
    ScheduleCreate,
    ScheduleList,
    Webhook,
    WebhookAttempt,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookList,
)
from llmgine_daemon.protocol.lifecycle import (  # noqa: F401
    MAX_WAIT_IDS,
    MAX_WAIT_TIMEOUT_S,
    CommandRetry,
    CommandWait,
    CommandWaitResult,
    QueueItem,
    QueueView,
)
from llmgine_daemon.protocol.mcp import (  # noqa: F401
    McpServer,
    McpServerCreate,
    McpServerList,
    McpSkippedTool,
)
from llmgine_daemon.protocol.streams import (  # noqa: F401
    ClientFrame,
    End,
    EventFrame,
    Frame,
    Hello,
    Lagging,
    Live,
    Ping,
    Pong,
    ServerFrame,
    StreamError,
    Subscribe,
    Subscribed,
)
from llmgine_daemon.protocol.system import (  # noqa: F401
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    ClusterInfo,
    ClusterNode,
    ConfigValue,
    ConfigView,
    DbStats,
    DbTable,
    Health,
    KeyState,
    LogCreate,
    LogLevel,
    LogList,
    LogRecord,
    MetricFamily,
    MetricSeries,
    MetricsSnapshot,
    SecretInfo,
    SecretList,
    SecretSet,
    SessionTokenCreated,
    ShutdownAccepted,
    SpanNode,
    Status,
    StatusCounts,
    StorageInfo,
    TraceList,
    TraceSummary,
    TraceView,
    VacuumResult,
)
from llmgine_daemon.protocol.usercode import (  # noqa: F401
    CommandHandlerCreate,
    EventHandlerCreate,
    Handler,
    HandlerKind,
    HandlerList,
    Tool,
    ToolCreate,
    ToolExecute,
    ToolList,
    ToolResult,
)
