"""The running handler's context: what a command handler reaches through ``current()`` while it
runs - its command record, and events published in the command's session (buffered by the
runner and written at the handler's next suspension point or with its result).

The runner sets ``CURRENT`` around each handler call (``Runner.invoke``); engines and the
user-code bridge read it.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import Command, ErrorCode, Event

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.jobs import Job
    from llmgine_daemon.bus.commands.runner import Runner


class Execution:
    """What a running handler can reach through ``current()``: its command, and events."""

    __slots__ = ("_runner", "_job")

    def __init__(self, runner: Runner, job: Job) -> None:
        self._runner = runner
        self._job = job

    @property
    def command(self) -> Command:
        return self._job.record

    @property
    def running(self) -> bool:
        return self._job.state == "running"

    @property
    def traced(self) -> bool:
        """Whether the run makes spans of its own (not in a set-based batch: batchset.py)."""
        return self._job.traced

    @property
    def cancel_reason(self) -> str | None:
        return self._job.cancel_reason

    def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        source: str = "handler",
    ) -> None:
        """Record an event in the command's session. It is written at the handler's next
        suspension point, or with its result; either way before CommandResult."""
        job = self._job
        job.pending.append((event_type, data or {}, metadata or {}, source))
        if job.flush_scheduled:
            return
        admitted = job.admitted
        if admitted is not None and not admitted.done():
            return  # an eager command not yet admitted: flushed once it is (or stored with it)
        job.flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._runner.flush, job)

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        source: str = "handler",
    ) -> Event:
        """Like ``emit``, but returns the stored event once it has committed."""
        admitted = self._job.admitted
        if admitted is not None and not admitted.done():
            # An eager command's events are written only once its submission has committed.
            await asyncio.wait([admitted])
        self.emit(event_type, data, metadata=metadata, source=source)
        events = await self._runner.flush(self._job)
        if not events:
            raise BusError(ErrorCode.CONFLICT, "the command was not stored; its events are not written")
        return events[-1]


CURRENT: contextvars.ContextVar[Execution] = contextvars.ContextVar("llmgine_execution")


def current() -> Execution:
    """The execution context of the command handler that is running (LookupError outside)."""
    return CURRENT.get()
