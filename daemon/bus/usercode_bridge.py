"""The bridge from user code to the bus: answers what code in the sandbox asks through its
global ``bus`` (the sandbox itself is ``llmgine_daemon/sandbox/``).

    await bus.publish(event_type, data)        an event in the caller's session (source handler)
    await bus.execute(command_type, params)    a command in the caller's session -> its result
    await bus.call_tool(name, arguments)       a tool of the caller's session -> its result
    bus.log(level, message)                    a record in the daemon's log (file and
                                               ``GET /api/observability/logs``), with the
                                               caller's session (source handler or tool)

Every request carries the depth of the call that made it; anything it triggers (the command's
handler, the tool, handlers of the published event) runs one level deeper, and past
``sandbox.max_depth`` the request is refused, so a handler cannot trigger itself forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.observability import logs
from llmgine_daemon.observability.context import bind
from llmgine_daemon.protocol import ErrorCode, Event
from llmgine_daemon.sandbox.calls import CallContext
from llmgine_daemon.sandbox.pool import SandboxPool

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.usercode")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


WINDOW = 60.0  # seconds of security.limits.session_log_records


class SessionLogWindow:
    """Each session's ``bus.log`` records in a minute, all its calls together, within
    ``security.limits.session_log_records``: past it they are dropped and counted, and the
    count is logged once the minute is over. Each call has its own budget too
    (``LogBudget``), but a session making call after call could still write without end: the
    log file rotates and the ``logs`` table keeps the newest records of all, so it pushed
    everyone else's records out. Memory: one window per session that logged this minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        # session -> [window start, records kept, records dropped]; oldest window first.
        self._windows: dict[str | None, list[float]] = {}

    def take(self, session_id: str | None) -> int:
        """Whether ``session_id`` may write one more record: 0 yes, else how many of its
        records this window has dropped, this one included (1: say so now)."""
        if not self.per_minute:
            return 0
        window = self._windows.get(session_id)
        if window is None:
            window = self._windows[session_id] = [self.clock(), 0, 0]
        if window[1] < self.per_minute:
            window[1] += 1
            return 0
        window[2] += 1
        return int(window[2])

    def ended(self) -> list[tuple[str | None, int]]:
        """The sessions whose window is over and dropped records, with how many (the windows
        are forgotten: the session's next record starts a new one)."""
        now = self.clock()
        over = []
        for session_id, (start, _kept, dropped) in list(self._windows.items()):
            if now - start < WINDOW:
                break  # (in order of their start: the rest are younger)
            del self._windows[session_id]
            if dropped:
                over.append((session_id, int(dropped)))
        return over

    def seconds_left(self, session_id: str | None) -> float:
        window = self._windows.get(session_id)
        return max(0.0, WINDOW - (self.clock() - window[0])) if window is not None else 0.0


class UserCodeFailed(Exception):
    """A nested call made by user code failed; the message goes back to the user code."""


class SandboxBridge:
    def __init__(self, bus: Bus, pool: SandboxPool) -> None:
        self.bus = bus
        self.pool = pool
        self.max_depth = pool.limits.max_depth
        pool.bus_handler = self.handle
        pool.log_handler = self.log
        self.log_window = SessionLogWindow(pool.limits.session_log_records)

    async def handle(self, ctx: CallContext, op: str, args: dict[str, Any]) -> Any:
        depth = ctx.depth + 1
        if depth > self.max_depth:
            raise BusError(
                ErrorCode.VALIDATION_ERROR,
                f"bus.{op} refused: nesting depth limit ({self.max_depth}) reached; a handler "
                "that triggers itself never ends",
                {"max_depth": self.max_depth},
            )
        if ctx.session_id is None:
            raise BusError(ErrorCode.VALIDATION_ERROR, f"bus.{op} needs a session")
        if op == "publish":
            event = await self.publish(
                ctx.session_id, _str(args, "event_type"), _dict(args, "data"), _dict(args, "metadata"), depth
            )
            return {f: getattr(event, f) for f in event.__struct_fields__}
        if op == "call_tool":
            result = await self.bus.tools.execute(
                ctx.session_id,
                _str(args, "name"),
                _dict(args, "arguments"),
                depth=depth,
                source="handler",
            )
            if result.error is not None:
                raise UserCodeFailed(f"tool {result.tool_name!r} failed: {result.error['message']}")
            return result.result
        if op == "execute":
            command_type = _str(args, "command_type")
            record = await self.bus.user_handlers.execute_nested(
                ctx,
                command_type,
                _dict(args, "parameters"),
                _dict(args, "metadata"),
                depth,
            )
            if record.status != "completed":
                error = record.error
                why = f": {error.code}: {error.message}" if error is not None else ""
                raise UserCodeFailed(f"command {command_type!r} ({record.command_id}) {record.status}{why}"[:4000])
            return record.result
        raise BusError(ErrorCode.VALIDATION_ERROR, f"unknown bus operation {op!r}")

    async def publish(
        self, session_id: str, event_type: str, data: dict[str, Any], metadata: dict[str, Any], depth: int
    ) -> Event:
        if not event_type or len(event_type) > 128:
            raise BusError(ErrorCode.VALIDATION_ERROR, "event_type must be 1 to 128 characters")

        def write(conn: sqlite3.Connection) -> Event:
            require_active(conn, session_id)
            return insert_event(
                conn, session_id, event_type, data, metadata=metadata, source="handler", cap=self.bus.events.max_bytes
            )

        event = await self.bus.store.write(write)
        # Handlers of this event run one level deeper than its publisher.
        self.bus.user_handlers.note_depth(event.event_id, depth)
        self.bus.events.notify([event])
        return event

    def log(self, ctx: CallContext, level: str, message: str) -> None:
        # Called in the task that runs the call, so the command/request context (command_id,
        # trace, span) is already bound; the session is bound here for tools run over the API.
        self.report_dropped()
        metadata = {"kind": ctx.kind, "name": ctx.name, "call_id": ctx.call_id, **ctx.extra}
        dropped = self.log_window.take(ctx.session_id)
        if dropped:
            if dropped == 1:
                left = self.log_window.seconds_left(ctx.session_id)
                self._budget_record(
                    ctx.session_id,
                    f"bus.log: this session reached its budget of {self.log_window.per_minute} "
                    "records a minute (security.limits.session_log_records); its records of the "
                    f"next {left:.0f} s are dropped and counted",
                    metadata,
                )
                # The count, once the minute is over (or at the next bus.log, if sooner).
                # (In a context of its own: not the command or trace of the call that was cut.)
                asyncio.get_running_loop().call_later(left + 0.1, self.report_dropped, context=contextvars.Context())
            return
        # One record is one line: user code cannot forge lines of the daemon's log.
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        with bind(session_id=ctx.session_id):
            logs.emit(
                "warning" if level.lower() == "warn" else level,
                message,
                metadata,
                source="tool" if ctx.kind == "tool" else "handler",
            )

    def report_dropped(self) -> None:
        """One record for each session whose minute is over and that had records dropped."""
        for session_id, dropped in self.log_window.ended():
            self._budget_record(
                session_id,
                f"bus.log: {dropped} records of this session dropped (over "
                f"security.limits.session_log_records, {self.log_window.per_minute} a minute)",
                {"dropped": dropped},
            )

    @staticmethod
    def _budget_record(session_id: str | None, message: str, metadata: dict[str, Any]) -> None:
        with bind(session_id=session_id):
            log.warning(message, extra={"source": "handler", "metadata": metadata})


def _str(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BusError(ErrorCode.VALIDATION_ERROR, f"{name} must be a non-empty string")
    return value


def _dict(args: dict[str, Any], name: str) -> dict[str, Any]:
    value = args.get(name) or {}
    if not isinstance(value, dict):
        raise BusError(ErrorCode.VALIDATION_ERROR, f"{name} must be an object")
    return value
