"""The bus's resources on the wire: sessions, events, commands, batches, engines and their
conversations."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from llmgine_daemon.protocol.base import ErrorBody
from llmgine_daemon.protocol.grammar import Id, SessionName, Timestamp, TypeName

# -- usage -------------------------------------------------------------------------------


class Usage(msgspec.Struct, kw_only=True):
    """Tokens of the model calls of a command, summed per batch, engine, session or report row
    (bus/usage.py). ``cost_usd`` is an estimate from the price table (``usage.prices``) at the
    time of each call; None when no call had a known price. ``unpriced_tokens``: tokens of
    calls to models without a price (left out of the cost)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache
    total_tokens: int = 0
    cost_usd: float | None = None
    unpriced_tokens: int = 0
    commands: int = 0  # commands that called a model


class UsageGroup(msgspec.Struct, kw_only=True):
    key: str | None  # the model, engine id or session id (None without ``by``)
    usage: Usage


class UsageReport(msgspec.Struct, kw_only=True):
    by: str | None
    session_id: str | None
    since: Timestamp | None
    groups: list[UsageGroup]
    total: Usage


# -- sessions ----------------------------------------------------------------------------

SessionStatus = Literal["active", "closed"]


class SessionCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: SessionName | None = None
    metadata: dict[str, Any] = {}


class SessionCounts(msgspec.Struct):
    commands: int = 0
    events: int = 0
    engines: int = 0
    tools: int = 0
    handlers: int = 0


class Session(msgspec.Struct):
    session_id: str
    name: str | None
    metadata: dict[str, Any]
    status: SessionStatus
    created_at: Timestamp
    last_activity_at: Timestamp
    ended_at: Timestamp | None = None
    counts: SessionCounts | None = None
    usage: Usage | None = None  # GET /api/sessions/{id} and the creation's answer (zero)
    # Returned once, by the request that created the session (see the security model).
    session_token: str | None = None


class SessionFork(msgspec.Struct, forbid_unknown_fields=True):
    # The event seq to fork at (the session's state as it stood right after that event);
    # none: now. 42.0 is 42 (protocol/integral.py, as for every integer). At most 2**53 - 1,
    # JavaScript's largest exact integer (no seq gets near it).
    at_seq: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] | None = None
    name: SessionName | None = None


class Fork(msgspec.Struct, kw_only=True):
    """``POST /api/sessions/{id}/fork``: the new session (with its session token, once), where
    it came from, and which new engine continues each engine of the original."""

    session: Session
    from_session_id: str
    at_seq: int
    engines: dict[str, str]  # original engine id -> the fork's
    tools: list[str]
    handlers: int


class SessionList(msgspec.Struct):
    sessions: list[Session]
    total: int
    limit: int
    offset: int


# -- events ------------------------------------------------------------------------------


class Event(msgspec.Struct):
    event_id: str
    seq: int
    session_id: str | None
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: Timestamp
    source: str
    trace_id: str | None = None


class EventCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_type: TypeName
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}


class EventList(msgspec.Struct):
    events: list[Event]
    total: int
    limit: int
    offset: int
    # The seq to pass as ``after`` for the next page (the last seq returned, else the ``after``
    # that was given): a client tailing the log polls with it and misses nothing.
    next_after: int | None


EVENT_SOURCES = ("api", "engine", "handler", "bus")

# -- commands ----------------------------------------------------------------------------

# blocked: waiting for the commands named in ``after`` (bus/commands/deps.py); waiting_approval:
# a ToolChat engine asked to run a tool that needs a person's approval (bus/approvals.py).
# Not finished yet: what the live queue view (GET /api/commands) shows.
UnfinishedStatus = Literal["queued", "blocked", "executing", "waiting_approval"]
TerminalStatus = Literal["completed", "failed", "timed_out", "cancelled", "interrupted"]
CommandStatus = Literal[UnfinishedStatus, TerminalStatus]
COMMAND_STATUSES: tuple[str, ...] = get_args(CommandStatus)
TERMINAL_STATUSES = frozenset(get_args(TerminalStatus))
UNFINISHED_STATUSES: tuple[str, ...] = get_args(UnfinishedStatus)
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")


MAX_AFTER = 100
AfterPolicy = Literal["completed", "always"]

# A command's metadata: open for the caller's own keys; these the daemon reads and checks
# (bus/commands/records.py ``validate``, retry_policy.py ``parse_policy``).
MAX_COMMAND_TIMEOUT_S = 7 * 24 * 3600.0
MAX_RETRIES = 100
MAX_RETRY_DELAY_S = 7 * 24 * 3600.0
MAX_RETRY_ON = 32
_DELAY = {"type": "number", "minimum": 0, "maximum": MAX_RETRY_DELAY_S}
_BACKOFF_TYPES = {"enum": ["fixed", "exponential"]}
# What the daemon refuses of them, for /openapi.json (the type alone said any object was fine).
METADATA_SCHEMA: dict[str, Any] = {
    "properties": {
        "priority": {
            "anyOf": [{"enum": list(PRIORITIES)}, {"type": "null"}],
            "description": "the session's queue runs high before normal before low (default normal)",
        },
        "timeout": {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_COMMAND_TIMEOUT_S}, {"type": "null"}],
            "description": "seconds the command may run before it is timed_out",
        },
        "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        "backoff": {
            "anyOf": [
                _BACKOFF_TYPES,
                {
                    "type": "object",
                    "properties": {"type": _BACKOFF_TYPES, "base": _DELAY, "cap": _DELAY},
                    "additionalProperties": False,
                },
            ],
        },
        "retry_on": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 64},
            "maxItems": MAX_RETRY_ON,
        },
    },
    "additionalProperties": True,
}
CommandMetadata = Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=METADATA_SCHEMA)]


class CommandCreate(msgspec.Struct, forbid_unknown_fields=True):
    command_type: TypeName
    parameters: dict[str, Any] = {}
    # Open for the caller's own keys; ``priority``, ``timeout`` and the retry policy's are
    # checked by the API (METADATA_SCHEMA).
    metadata: CommandMetadata = {}
    # Commands (of any session the caller may see) that must end first: until then this one is
    # ``blocked``. ``after_policy`` completed: it runs once all completed, and is cancelled
    # (``details.reason: dependency_failed``) if one ends otherwise; always: it runs once all ended.
    after: Annotated[list[Id], msgspec.Meta(max_length=MAX_AFTER)] = []
    after_policy: AfterPolicy = "completed"


class Command(msgspec.Struct, kw_only=True):
    command_id: str
    status: CommandStatus
    result: Any = None
    error: ErrorBody | None = None
    created_at: Timestamp
    session_id: str
    command_type: str
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    priority: str = "normal"
    timeout: float | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    duration_ms: float | None = None
    batch_id: str | None = None
    # The trace of the request that submitted it (GET /api/observability/traces/{trace_id}).
    trace_id: str | None = None
    # Model calls an engine made for it (None: it called none).
    usage: Usage | None = None
    # 1 for the first run, one more per retry (``metadata.retries``, ``command retry``).
    attempt: int = 1


class CommandList(msgspec.Struct):
    commands: list[Command]
    total: int
    limit: int
    offset: int


BatchMode = Literal["parallel", "sequential"]
# queued: none of its commands started; finished: all of them did (records.batch_status).
BatchStatus = Literal["queued", "executing", "finished"]


class BatchCommandCreate(CommandCreate, forbid_unknown_fields=True):
    """A command of a batch: as a single one, but without dependencies (`after`)."""

    # Refused when not empty by bus/commands/records.py ``validate``, with a message that says
    # why (a length limit here would answer msgspec's "Expected array of length <= 0").
    after: Annotated[list[Id], msgspec.Meta(extra_json_schema={"maxItems": 0})] = []


# The most commands one batch takes (the bus checks it too, for batches that do not come
# over HTTP); in the schema, so that /openapi.json says it.
MAX_BATCH_COMMANDS = 10_000


class BatchCreate(msgspec.Struct, forbid_unknown_fields=True):
    commands: Annotated[list[BatchCommandCreate], msgspec.Meta(min_length=1, max_length=MAX_BATCH_COMMANDS)]
    mode: BatchMode = "parallel"
    stop_on_error: bool = False


class Batch(msgspec.Struct):
    batch_id: str
    session_id: str
    mode: str
    stop_on_error: bool
    status: BatchStatus
    created_at: Timestamp
    commands: list[Command]
    usage: Usage | None = None  # its commands' usage, summed


# -- engines -----------------------------------------------------------------------------


class EngineCreate(msgspec.Struct, forbid_unknown_fields=True):
    engine_type: str
    session_id: Id
    model_name: str | None = None
    configuration: dict[str, Any] = {}


# ``?status=active`` lists every engine that is not stopped.
EngineStatus = Literal["initialized", "stopped"]


class Engine(msgspec.Struct, kw_only=True):
    engine_id: str
    engine_type: str
    model_name: str | None
    status: EngineStatus
    session_id: str
    configuration: dict[str, Any]
    created_at: Timestamp
    command_type: str
    usage: Usage | None = None  # GET /api/engines/{id} only


class EngineList(msgspec.Struct):
    engines: list[Engine]
    total: int
    limit: int
    offset: int


class EngineConfigField(msgspec.Struct):
    name: str
    type: str  # integer | number | boolean | string
    default: Any
    description: str


class EngineType(msgspec.Struct):
    engine_type: str
    command_type: str
    description: str
    configuration: list[EngineConfigField]


class EngineTypeList(msgspec.Struct):
    types: list[EngineType]


class EngineExecute(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str
    parameters: dict[str, Any] = {}
    metadata: CommandMetadata = {}


# -- engine conversations (LLM engines' memory) --------------------------------------------


class EngineMessage(msgspec.Struct, kw_only=True):
    message_id: int
    role: str  # user | assistant | tool
    content: str
    # Assistant messages that called tools: [{"id", "name", "arguments"}].
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None  # tool results: the call they answer
    name: str | None = None  # tool results: the tool's name
    partial: bool = False  # an answer cut short (cancelled, timed out): what had arrived
    is_error: bool = False  # a tool result that is an error
    command_id: str | None = None
    created_at: Timestamp


class EngineMessageList(msgspec.Struct):
    engine_id: str
    messages: list[EngineMessage]
    total: int
    limit: int
    offset: int


class EngineReset(msgspec.Struct):
    engine_id: str
    deleted: int


# -- approvals (bus/approvals.py) --------------------------------------------------------------

ApprovalStatus = Literal["pending", "approved", "denied", "expired", "cancelled"]
APPROVAL_STATUSES: tuple[str, ...] = get_args(ApprovalStatus)


class Approval(msgspec.Struct, kw_only=True):
    """A tool call a ToolChat engine wants to make, waiting for (or given) a decision."""

    approval_id: str
    session_id: str
    command_id: str
    engine_id: str | None
    call_id: str
    tool_name: str
    arguments: dict[str, Any]  # what the model asked for
    status: ApprovalStatus
    requested_at: Timestamp
    expires_at: Timestamp
    decided_at: Timestamp | None = None
    decided_by: str | None = None  # the credential: key id, "local", "session-token", "daemon"
    reason: str | None = None
    final_arguments: dict[str, Any] | None = None  # what ran (edited when approving), if it ran


class ApprovalList(msgspec.Struct):
    approvals: list[Approval]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0


class ApprovalDecision(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    # Approving with other arguments (the model's, edited); checked against the tool's schema.
    arguments: dict[str, Any] | None = None
