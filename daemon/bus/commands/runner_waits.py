"""The runner's waiting side: answering who waits for commands to finish, the shutdown drain,
and giving up commands whose session another node took over (bus/cluster.py). A mixin of
``Runner`` (runner.py), which holds the state these methods use: ``jobs``, ``queues``,
``stopping``, ``cancel_running``, ``untrack``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llmgine_daemon.bus.commands.jobs import Job, SessionQueue
from llmgine_daemon.protocol import Command


class Waiting:
    # Runner's (runner.py).
    jobs: dict[str, Job]
    queues: dict[str, SessionQueue]
    stopping: bool
    _drain_signal: asyncio.Future[None] | None
    cancel_running: Callable[[Job, str], None]
    untrack: Callable[[Job], None]

    async def wait(self, jobs: list[Job], timeout: float) -> bool:
        """Wait until every job is finished or ``timeout`` passed; True if all finished.

        While the daemon drains for shutdown a queued command will not start here (it stays
        queued for the next start), so waiting stops as soon as the running ones finished.
        """
        loop = asyncio.get_running_loop()
        waiters: dict[asyncio.Future[Command], Job] = {}
        for job in jobs:
            if job.state in ("done", "cancelled") and job.record.status not in ("queued", "executing"):
                continue
            if job.waiter is None:
                job.waiter = loop.create_future()
            waiters[job.waiter] = job
        if not waiters:
            return True
        if timeout <= 0:
            return False
        deadline = loop.time() + timeout
        # One callback per job counting down. (Waiting for "the first of those left" again after
        # each completion re-registered on all of them: O(n^2) for a batch of 10,000; gather
        # wraps each future again and keeps its results: a third of this for nothing.)
        all_done: asyncio.Future[None] = loop.create_future()
        countdown = [len(waiters)]

        def one_done(_: asyncio.Future[Command]) -> None:
            countdown[0] -= 1
            if not countdown[0] and not all_done.done():
                all_done.set_result(None)

        for waiter in waiters:
            waiter.add_done_callback(one_done)
        while not all_done.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            watch: list[asyncio.Future[Any]] = [all_done]
            if self.stopping:
                left = [f for f in waiters if not f.done()]
                if any(waiters[f].state == "queued" for f in left):
                    running = [f for f in left if waiters[f].state != "queued"]
                    if running:
                        await asyncio.wait(running, timeout=remaining)
                    return False
            else:
                watch.append(self._draining())
            await asyncio.wait(watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        return True

    def draining(self) -> asyncio.Future[None]:
        """Done once shutdown begins (``drain``): long waits answer then."""
        return self._draining()

    def _draining(self) -> asyncio.Future[None]:
        if self._drain_signal is None:
            self._drain_signal = asyncio.get_running_loop().create_future()
            if self.stopping:
                self._drain_signal.set_result(None)
        return self._drain_signal

    def drain(self) -> None:
        """Shutdown begins: start nothing more (queued commands stay queued for the next start),
        let what runs finish while in-flight requests are answered; ``stop`` interrupts the rest."""
        self.stopping = True
        signal = self._draining()
        if not signal.done():
            signal.set_result(None)

    def has_work(self, session_id: str) -> bool:
        """Does this node run, or hold queued, anything of the session?"""
        q = self.queues.get(session_id)
        if q is not None and (q.busy or q.heap or q.task is not None):
            return True
        return any(j.record.session_id == session_id for j in self.jobs.values())

    def lose_session(self, session_id: str) -> None:
        """Another node took the session over: forget its queue, stop what runs (its end
        cannot be recorded from here: ``finish`` meets LeaseLost and drops it)."""
        q = self.queues.get(session_id)
        if q is not None:
            q.heap.clear()
        jobs = [j for j in self.jobs.values() if j.record.session_id == session_id]
        self.lose_jobs([j for j in jobs if j.state == "queued"])
        for job in jobs:
            if job.state in ("starting", "running"):
                self.cancel_running(job, "lease")

    def lose_jobs(self, jobs: list[Job]) -> None:
        """Commands now another node's: out of this node's memory; whoever waits on them here
        follows them in the store (``Commands.wait``)."""
        for job in jobs:
            job.state = "done"
            job.pending = []
            self.untrack(job)
            if job.waiter is not None and not job.waiter.done():
                job.waiter.set_result(job.record)
