"""Tools (spec section 5): user functions registered per session, run in the sandbox.

MCP servers' tools (``SERVER.tool``, bus/mcp_servers.py) are listed, read and executed here
too, and record the same event and span.

Registration validates the code in a worker (syntax with line and column, a function with the
tool's name, its signature -> JSON Schema) before anything is stored; the daemon itself never
compiles it. Each execution validates the arguments against the schema, runs the function in
a worker and records a ``ToolExecuted`` event in the session.
"""

from __future__ import annotations

import keyword
import sqlite3
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus import jsonschema
from llmgine_daemon.bus.codec import dumps, loads
from llmgine_daemon.bus.errors import BusError, not_found
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.mcp_servers import SEPARATOR
from llmgine_daemon.bus.sessions import fetch_session, require_active
from llmgine_daemon.observability import tracing
from llmgine_daemon.protocol import CallErrorCode, ErrorCode, Tool, ToolResult, now_iso
from llmgine_daemon.protocol.grammar import MAX_CODE, TOOL_NAME_RE
from llmgine_daemon.sandbox.calls import CallContext, CallOutcome

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

# requires_approval: migration 102 (bus/approvals.py).
TOOL_COLUMNS = (
    "session_id, name, description, parameters, timeout, is_async, created_at, function_code, requires_approval"
)
# ?replace=true: the new definition over the old (an upsert, portable to PostgreSQL).
_REPLACE = ", ".join(f"{c} = excluded.{c}" for c in TOOL_COLUMNS.split(", ")[2:])


def row_to_tool(row: tuple[Any, ...], with_code: bool = False) -> Tool:
    return Tool(
        session_id=row[0],
        name=row[1],
        description=row[2],
        parameters=loads(row[3]),
        timeout=row[4],
        is_async=bool(row[5]),
        created_at=row[6],
        function_code=row[7] if with_code else None,
        requires_approval=bool(row[8]),
    )


def check_name(name: str) -> None:
    if not TOOL_NAME_RE.match(name) or keyword.iskeyword(name):
        raise BusError(
            ErrorCode.VALIDATION_ERROR,
            f"invalid tool name {name[:80]!r}",
            {"field": "name", "issue": "must be a Python identifier of at most 64 characters"},
        )


def check_code(code: str, field: str) -> None:
    if not code.strip():
        raise BusError(
            ErrorCode.VALIDATION_ERROR, f"{field} is empty", {"field": field, "issue": "must contain Python source"}
        )
    if len(code) > MAX_CODE:
        raise BusError(
            ErrorCode.VALIDATION_ERROR,
            f"{field} is too long",
            {"field": field, "issue": f"at most {MAX_CODE} characters"},
        )


def check_timeout(timeout: float | None, maximum: float = 3600.0) -> None:
    """``maximum``: sandbox.max_timeout, the longest any user-code call may run."""
    if timeout is not None and not 0 < timeout <= maximum:
        raise BusError(
            ErrorCode.VALIDATION_ERROR,
            f"timeout must be from 0 to {maximum:g} seconds (sandbox.max_timeout)",
            {"field": "timeout", "issue": f"must be > 0 and <= {maximum:g}"},
        )


def code_rejected(outcome: CallOutcome, field: str) -> BusError:
    """A 422 saying why the worker could not load the code (line/column for syntax errors)."""
    error = outcome.error or {}
    code = error.get("code")
    if code == CallErrorCode.SANDBOX_UNAVAILABLE:  # not the code's fault: 503 with the fix
        return BusError(ErrorCode.SANDBOX_UNAVAILABLE, error.get("message", "no sandbox"))
    if code in (CallErrorCode.TIMEOUT, CallErrorCode.WORKER_CRASHED):
        details = {"field": field, "issue": error.get("message", ""), "reason": code}
    else:
        details = {
            "field": field,
            "issue": error.get("message", ""),
            "reason": code,
            **{k: v for k, v in (error.get("details") or {}).items() if k != "traceback"},
        }
    return BusError(ErrorCode.VALIDATION_ERROR, f"{field}: {error.get('message', 'rejected')}", details)


class Tools:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def start(self) -> None:
        """Tools are stored: they will be called, so the sandbox's workers start now, not at
        the first call (sandbox/pool.py)."""

        def any_tool(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM tools LIMIT 1").fetchone() is not None

        if self.bus.sandbox is not None and await self.bus.store.read(any_tool):
            self.bus.warm_sandbox()

    async def register(
        self,
        session_id: str,
        name: str | None,
        function_code: str,
        description: str | None,
        parameters: dict[str, Any] | None,
        timeout: float | None,
        replace: bool = False,
        requires_approval: bool = False,
    ) -> Tool:
        """Without ``name`` the tool is the last function the code defines (the sandbox finds
        it: the daemon never parses user code)."""
        if name is not None:
            check_name(name)
        check_code(function_code, "function_code")
        check_timeout(timeout, self.bus.max_timeout)
        capacity = self.bus.capacity

        def ready(conn: sqlite3.Connection) -> None:
            require_active(conn, session_id)
            capacity.check_tools(conn, session_id, name)

        # Fail fast on a missing/closed session, or one at its maximum, before spending a
        # worker on the code; the write checks again (it is what decides).
        await self.bus.store.read(ready)
        outcome = await self.bus.sandbox_pool().inspect("tool", function_code, name, share=session_id)
        if not outcome.ok:
            raise code_rejected(outcome, "function_code")
        info = outcome.result
        if name is None:
            name = str(info["function"])
            check_name(name)
        try:
            schema = jsonschema.normalise(parameters, info["parameters"])
            jsonschema.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise BusError(ErrorCode.VALIDATION_ERROR, str(exc), {"field": exc.field, "issue": exc.issue}) from None
        tool = Tool(
            name=name,
            session_id=session_id,
            description=description if description is not None else info["description"],
            parameters=schema,
            is_async=bool(info["is_async"]),
            timeout=timeout,
            created_at=now_iso(),
            function_code=function_code,
            requires_approval=requires_approval,
        )

        def write(conn: sqlite3.Connection) -> None:
            require_active(conn, session_id)
            exists = conn.execute(
                "SELECT 1 FROM tools WHERE session_id = ? AND name = ?", (session_id, name)
            ).fetchone()
            if exists and not replace:
                raise BusError(
                    ErrorCode.CONFLICT,
                    f"tool {name!r} already exists in this session (use ?replace=true)",
                    {"session_id": session_id, "tool_name": name},
                )
            if not exists:
                capacity.check_tools(conn, session_id, None)
            conn.execute(
                f"INSERT INTO tools ({TOOL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (session_id, name) DO UPDATE SET {_REPLACE}",
                (
                    session_id,
                    name,
                    tool.description,
                    dumps(schema),
                    timeout,
                    int(tool.is_async),
                    tool.created_at,
                    function_code,
                    int(requires_approval),
                ),
            )

        await self.bus.store.write(write)
        return tool

    async def list(self, session_id: str) -> list[Tool]:
        def read(conn: sqlite3.Connection) -> list[Tool]:
            fetch_session(conn, session_id)
            rows = conn.execute(f"SELECT {TOOL_COLUMNS} FROM tools WHERE session_id = ?", (session_id,)).fetchall()
            # By name in code-point order here, not ORDER BY: PostgreSQL's follows the
            # database's collation (en_US: "_x, alpha, Zeta"; SQLite and C: "Zeta, _x, alpha").
            return sorted((row_to_tool(r) for r in rows), key=lambda tool: tool.name)

        return [*await self.bus.store.read(read), *await self.bus.mcp.tools_for(session_id)]

    async def get(self, session_id: str, name: str) -> Tool:
        if SEPARATOR in name:  # an MCP server's tool (bus/mcp_servers.py)
            await self.bus.store.read(lambda conn: fetch_session(conn, session_id))
            return await self.bus.mcp.tool(session_id, name)

        def read(conn: sqlite3.Connection) -> Tool:
            fetch_session(conn, session_id)
            row = conn.execute(
                f"SELECT {TOOL_COLUMNS} FROM tools WHERE session_id = ? AND name = ?",
                (session_id, name),
            ).fetchone()
            if row is None:
                raise not_found("tool", tool_name=name, session_id=session_id)
            return row_to_tool(row, with_code=True)

        return await self.bus.store.read(read)

    async def delete(self, session_id: str, name: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            fetch_session(conn, session_id)
            deleted = conn.execute("DELETE FROM tools WHERE session_id = ? AND name = ?", (session_id, name)).rowcount
            if not deleted:
                raise not_found("tool", tool_name=name, session_id=session_id)

        await self.bus.store.write(write)

    async def execute(
        self,
        session_id: str,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout: float | None = None,
        depth: int = 0,
        source: str = "api",
    ) -> ToolResult:
        check_timeout(timeout, self.bus.max_timeout)
        maximum = self.bus.capacity.max_event_bytes_per_session
        if source == "api" and maximum > 0:  # a call of its own, not one a running command makes
            await self.bus.store.read(lambda conn: self.bus.capacity.check_event_bytes(conn, session_id))
        if SEPARATOR in name:
            result = await self._call_mcp(session_id, name, arguments, timeout, source, depth)
        else:
            result = await self._run(session_id, name, arguments, timeout, source, depth)
        await self._record(session_id, result, source)
        return result

    async def _call_mcp(
        self, session_id: str, name: str, arguments: dict[str, Any], timeout: float | None, source: str, depth: int
    ) -> ToolResult:
        """An MCP server's tool: the server checks the arguments against its own schema."""
        context = CallContext(session_id=session_id, kind="tool", name=name, depth=depth)
        server = name.partition(SEPARATOR)[0]
        with tracing.span(
            "tool.call", session_id=session_id, tool=name, call_id=context.call_id, source=source, depth=depth
        ) as span:
            span.set(mcp_server=server)
            _, outcome = await self.bus.mcp.call(session_id, name, arguments, timeout)
            if outcome.error is not None:
                span.fail(f"{outcome.error.get('code')}: {outcome.error.get('message')}")
        return ToolResult(
            call_id=context.call_id,
            tool_name=name,
            arguments=arguments,
            result=outcome.result,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )

    async def _run(
        self, session_id: str, name: str, arguments: dict[str, Any], timeout: float | None, source: str, depth: int
    ) -> ToolResult:
        tool = await self.get(session_id, name)
        try:
            jsonschema.validate(arguments, tool.parameters, "arguments")
        except jsonschema.SchemaError as exc:
            raise BusError(
                ErrorCode.VALIDATION_ERROR, f"invalid arguments: {exc}", {"field": exc.field, "issue": exc.issue}
            ) from None
        context = CallContext(session_id=session_id, kind="tool", name=name, depth=depth)
        assert tool.function_code is not None
        with tracing.span(
            "tool.call", session_id=session_id, tool=name, call_id=context.call_id, source=source, depth=depth
        ) as span:
            outcome = await self.bus.sandbox_pool().run(
                "tool",
                tool.function_code,
                name,
                arguments,
                context=context,
                deadline=timeout or tool.timeout,
            )
            if not outcome.ok:
                error = outcome.error or {}
                span.fail(f"{error.get('code')}: {error.get('message')}")
                if error.get("code") == CallErrorCode.SANDBOX_UNAVAILABLE:
                    raise BusError(ErrorCode.SANDBOX_UNAVAILABLE, str(error.get("message")))
        return ToolResult(
            call_id=context.call_id,
            tool_name=name,
            arguments=arguments,
            result=outcome.result if outcome.ok else None,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            output=outcome.output,
            output_truncated=outcome.output_truncated,
        )

    async def _record(self, session_id: str, result: ToolResult, source: str) -> None:
        """The call's ``ToolExecuted`` event (registered and MCP tools alike)."""

        def write(conn: sqlite3.Connection) -> Any:
            fetch_session(conn, session_id)
            data = {
                "call_id": result.call_id,
                "tool_name": result.tool_name,
                "arguments": result.arguments,
                "result": result.result,
                "error": result.error,
                "duration_ms": result.duration_ms,
            }
            return insert_event(conn, session_id, "ToolExecuted", data, source=source)

        event = await self.bus.store.write(write)
        self.bus.events.notify([event])
