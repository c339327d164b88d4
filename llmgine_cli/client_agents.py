"""The Client's endpoint methods for what agent builders use (docs/agents.md): approvals, forking
a session, usage totals and MCP tool servers. One method per endpoint, as in client.py, which
inherits them (``Client(..., AgentEndpoints, ...)``); tests/api/test_endpoints.py holds them to
the endpoint table like the others."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmgine_daemon.protocol import (
    Approval,
    ApprovalDecision,
    ApprovalList,
    Fork,
    McpServer,
    McpServerCreate,
    McpServerList,
    SessionFork,
    ToolList,
    UsageReport,
)

from llmgine_cli.client_verbs import SessionRef, _id, _scoped


class AgentEndpoints:
    _op: Any  # Client._op

    def list_approvals(self, session_id: str, *, status: str | None = None) -> ApprovalList:
        return self._op("listApprovals", path={"session_id": _id(session_id)}, query={"status": status})

    def decide_approval(
        self,
        session_id: str,
        approval_id: str,
        decision: str,
        *,
        reason: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> Approval:
        path = {"session_id": _id(session_id), "approval_id": _id(approval_id)}
        return self._op("decideApproval", path=path, body=ApprovalDecision(decision, reason, arguments))  # type: ignore[arg-type]

    def fork_session(
        self, session_id: str, *, at_seq: int | None = None, name: str | None = None, if_exists: str | None = None
    ) -> Fork:
        """``if_exists="error"``: CONFLICT when an active session already has ``name``."""
        path = {"session_id": _id(session_id)}
        return self._op("forkSession", path=path, body=SessionFork(at_seq, name), query={"if_exists": if_exists})

    # -- usage totals (api/usage.py) -------------------------------------------------------

    def usage(self, *, session_id: str | None = None, since: str | None = None, by: str | None = None) -> UsageReport:
        return self._op("getUsage", query={"session_id": session_id, "since": since, "by": by})

    # -- MCP servers (api/mcp.py); session_id None = the global scope -----------------------

    def register_mcp_server(
        self,
        session_id: SessionRef | None,
        name: str,
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        trusted: bool = False,
        mounts: Sequence[str] = (),
        timeout: float | None = None,
        requires_approval: bool = False,
        replace: bool = False,
    ) -> McpServer:
        """``command`` + ``args`` (stdio) or ``url`` (streamable HTTP); ``env`` values may be
        ``secret:NAME``. Answers once the server's first connection succeeded or failed.
        ``replace``: a server of that name there is stopped and replaced."""
        body = McpServerCreate(
            name, command, list(args), url, dict(env or {}), trusted, list(mounts), timeout, requires_approval
        )
        op, path = _scoped("registerMcpServer", session_id)
        return self._op(op, path=path, body=body, wait=60, query={"replace": "true" if replace else None})

    def list_mcp_servers(self, session_id: SessionRef | None) -> McpServerList:
        op, path = _scoped("listMcpServers", session_id)
        return self._op(op, path=path)

    def get_mcp_server(self, session_id: SessionRef | None, name: str) -> McpServer:
        op, path = _scoped("getMcpServer", session_id, name=name)
        return self._op(op, path=path)

    def delete_mcp_server(self, session_id: SessionRef | None, name: str) -> None:
        op, path = _scoped("deleteMcpServer", session_id, name=name)
        return self._op(op, path=path)

    def mcp_server_tools(self, session_id: SessionRef | None, name: str) -> ToolList:
        op, path = _scoped("listMcpServerTools", session_id, name=name)
        return self._op(op, path=path)
