"""User code on the wire: tools and handlers."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from llmgine_daemon.protocol.grammar import (
    CommandHandlerType,
    EventHandlerType,
    HandlerPriority,
    SourceCode,
    Timeout,
    Timestamp,
    ToolName,
)

# -- tools (spec section 5) ---------------------------------------------------------------


class ToolCreate(msgspec.Struct, forbid_unknown_fields=True):
    function_code: SourceCode
    # default: the last function the code defines (found by the sandbox, never by the daemon)
    name: ToolName | None = None
    description: str | None = None  # default: the docstring's first paragraph
    # {param: {type, description}} as in the spec, or a full JSON Schema; default: derived
    # from the signature's type hints and the docstring.
    parameters: dict[str, Any] | None = None
    timeout: Timeout | None = None  # seconds; default sandbox.deadline
    # A ToolChat engine asks a person before each call (bus/approvals.py).
    requires_approval: bool = False


class Tool(msgspec.Struct):
    name: str
    session_id: str
    description: str
    parameters: dict[str, Any]  # JSON Schema
    is_async: bool
    timeout: float | None
    created_at: Timestamp
    function_code: str | None = None  # only when one tool is read
    server: str | None = None  # an MCP server's tool (named SERVER.tool): the server's name
    requires_approval: bool = False


class ToolList(msgspec.Struct):
    tools: list[Tool]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0


class ToolExecute(msgspec.Struct, forbid_unknown_fields=True):
    arguments: dict[str, Any] = {}
    timeout: Timeout | None = None


class ToolResult(msgspec.Struct):
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    duration_ms: float
    output: str = ""
    output_truncated: bool = False


# -- handlers (spec section 6) ------------------------------------------------------------

HandlerKind = Literal["command", "event"]


class CommandHandlerCreate(msgspec.Struct, forbid_unknown_fields=True):
    command_type: CommandHandlerType
    handler_function: SourceCode
    timeout: Timeout | None = None


class EventHandlerCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_type: EventHandlerType  # or "*" for every event
    handler_function: SourceCode
    priority: HandlerPriority = 100  # lower runs first
    timeout: Timeout | None = None


class Handler(msgspec.Struct):
    handler_id: str
    kind: HandlerKind
    type: str  # the command_type or event_type
    scope: str  # session | global
    session_id: str | None
    function: str
    priority: int
    timeout: float | None
    created_at: Timestamp
    handler_function: str | None = None  # the source, only when one handler is read


class HandlerList(msgspec.Struct):
    handlers: list[Handler]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0
