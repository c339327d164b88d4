"""MCP tool servers on the wire (``/api/mcp-servers``, ``/api/sessions/{id}/mcp-servers``).

A registration names a server and says how to reach it: a ``command`` (stdio: the daemon
starts and supervises the process) or a ``url`` (streamable HTTP). Its tools are the session's
tools as ``NAME.tool`` (bus/mcp_servers.py). Environment values may name a secret of
``llmgine secret`` (``secret:NAME``); a server as read back shows only the variables' names.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from llmgine_daemon.protocol.grammar import ENV_NAME_PATTERN, MCP_NAME_PATTERN, MCP_NAME_RULE, Timeout, Timestamp

McpServerName = Annotated[str, msgspec.Meta(pattern=MCP_NAME_PATTERN, description=MCP_NAME_RULE)]
MAX_ARG = 4096
McpArg = Annotated[str, msgspec.Meta(max_length=MAX_ARG)]
McpEnvName = Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)]
McpEnvValue = Annotated[
    str, msgspec.Meta(max_length=MAX_ARG, description="a value, or secret:NAME (a secret of `llmgine secret`)")
]
McpStatus = Literal["starting", "running", "restarting", "failed", "stopped"]


class McpServerCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: McpServerName
    command: McpArg | None = None  # stdio: the program (a path, or a name looked up on PATH)
    args: Annotated[list[McpArg], msgspec.Meta(max_length=64)] = []
    url: McpArg | None = None  # streamable HTTP: the endpoint (hosts: mcp.allowed_hosts)
    env: Annotated[dict[McpEnvName, McpEnvValue], msgspec.Meta(max_length=64)] = {}
    # stdio only: run without the sandbox, with the network (API keys and the owner only).
    trusted: bool = False
    # stdio, sandboxed: more paths the server may read (read-only), besides its command's own.
    mounts: Annotated[list[McpArg], msgspec.Meta(max_length=16)] = []
    timeout: Timeout | None = None  # seconds per tool call; default mcp.call_timeout
    # Its tools ask a person before a ToolChat engine runs them (engines/approval.py).
    requires_approval: bool = False


class McpSkippedTool(msgspec.Struct):
    name: str  # as the server announced it, control characters escaped, at most 80 characters
    reason: str


class McpServer(msgspec.Struct):
    name: str
    scope: str  # session | global
    session_id: str | None
    transport: str  # stdio | http
    command: str | None
    args: list[str]
    url: str | None
    env_keys: list[str]  # the values (and the secrets they name) are never returned
    trusted: bool
    mounts: list[str]
    timeout: float | None
    created_at: Timestamp
    status: McpStatus
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None  # stdio: the process the daemon started (bubblewrap's, when sandboxed)
    tools: list[str] = []  # NAME.tool, as offered now
    # Tools the server announced that are not offered (a name outside the grammar, a name
    # twice, a description or schema over its limit, past the per-server limits): the
    # first 20, and how many in all (bus/mcp_servers.py, mcp/connection.py).
    skipped_tools: list[McpSkippedTool] = []
    tools_skipped: int = 0
    requires_approval: bool = False


class McpServerList(msgspec.Struct):
    servers: list[McpServer]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0
