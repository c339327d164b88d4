"""Eager commands: a command whose handler calls nothing outside the daemon
(``handler_registry.Registration.eager``, e.g. DummyEngine) runs before its submission has committed.

``Commands._submit_eager`` makes the submission's write and its future (``Job.admitted``), then
``Runner.run_eager`` calls ``begin_eager`` right there, in the submitting task: it queues that
write and runs the handler at once, up to its first suspension, in a context of its own (what
the handler sets there is not the request's). If the handler returns without suspending,
nothing else has run since, so the writer has not taken the submission yet: ``final`` turns it
into the finished command, stored with all its events in one write, and no task was started.
If it suspends, the session's runner task goes on with it (``Resume``, in that same context),
and nothing of it is written until the submission has committed; if the submission fails, the
run is dropped (``is_refused``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.jobs import Job
from llmgine_daemon.observability.context import CURRENT_SPAN, FIELDS
from llmgine_daemon.protocol import now_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.runner import Runner


def begin_eager(
    runner: Runner, job: Job, queue_write: Callable[[], Any], final: list[Any], ctx: contextvars.Context | None
) -> tuple[Resume, contextvars.Context | None] | None:
    """Queue the job's submission, then run its handler here and now, up to its first
    suspension. None when it finished without suspending (``final`` then holds its outcome, the
    events it emitted and the time it ended, for the submission's write); else the rest of the
    run, to be awaited in the same context. ``ctx``: run it in that context, cleaned first (a
    request's task: its span and log fields are not the command's); None: in the current one
    (the session's drain task, clean already)."""
    queue_write()
    coro = runner.invoke(job)
    try:
        if ctx is None:
            step = coro.send(None)
        else:
            ctx.run(clean_context)
            step = ctx.run(coro.send, None)
    except StopIteration as stop:
        pending, job.pending = job.pending, []
        final.append((stop.value, pending, now_iso()))
        return None
    return Resume(coro, step), ctx


def clean_context() -> None:
    """No span or log fields of whoever started the run: a command is traced and logged as its own."""
    CURRENT_SPAN.set(None)
    FIELDS.set({})


class Resume:
    """Awaitable that goes on with a coroutine its caller stepped to its first suspension (what
    ``await`` would have done had it not been stepped by hand)."""

    __slots__ = ("coro", "step")

    def __init__(self, coro: Coroutine[Any, Any, Any], step: Any) -> None:
        self.coro, self.step = coro, step

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.step
        while True:
            try:
                sent = yield step
            except BaseException as exc:  # thrown in: cancellation
                try:
                    step = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def is_admitted(job: Job) -> bool:
    """Its submission has committed (always true of a command that is not eager)."""
    fut = job.admitted
    return fut is None or (fut.done() and not is_refused(job))


def is_refused(job: Job) -> bool:
    """An eager command whose submission failed: nothing of its run may be written."""
    fut = job.admitted
    if fut is None or not fut.done():
        return False
    return fut.cancelled() or fut.exception() is not None or fut.result()[0] is not None
