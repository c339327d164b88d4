"""Running a batch of commands (``BatchJob``): ``sequential`` runs them one after another in
the given order, ``parallel`` many at once; ``stop_on_error`` cancels what has not finished
once one fails or times out; a batch whose handlers are all eager runs set by set
(batchset.py). The session's runner task calls this with the session's slot
held, so nothing else of the session runs in between (see ``runner.py``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from llmgine_daemon.bus.commands.batchset import all_eager, run_set
from llmgine_daemon.bus.commands.jobs import BatchJob, Job

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.runner import Runner

# How many commands of a parallel batch run at once: enough for the group-commit writer to
# fill its transactions, few enough that a batch of real LLM calls does not open 10,000
# connections.
BATCH_PARALLELISM = 128


async def run_batch(runner: Runner, batch: BatchJob) -> None:
    """Run a batch: its commands one after another, or many at once (``mode``); set by set
    when every handler is eager (batchset.py)."""
    if all_eager(runner, batch):
        await run_set(runner, batch, lambda: _run_parallel(runner, batch))
    elif batch.mode == "sequential":
        await _run_sequential(runner, batch)
    else:
        await _run_parallel(runner, batch)


async def _run_sequential(runner: Runner, batch: BatchJob) -> None:
    queued = [j for j in batch.jobs if j.state == "queued"]
    started: Job | None = None
    for i, job in enumerate(queued):
        if runner.stopping or batch.stopped:
            break
        if job is not started and not await runner.start_jobs([job]):
            continue
        outcome = await runner.invoke(job)
        failed = outcome.status in ("failed", "timed_out")
        nxt = None
        if not (batch.stop_on_error and failed) and not runner.stopping:
            nxt = next((j for j in queued[i + 1 :] if j.state == "queued"), None)
        started_now = await runner.finish(job, outcome, start=[nxt] if nxt else [])
        started = nxt if nxt is not None and nxt in started_now else None
        if batch.stop_on_error and failed:
            batch.stopped = True
            await runner.cancel_queued([j for j in queued[i + 1 :] if j.state == "queued"], "batch")


async def _run_parallel(runner: Runner, batch: BatchJob) -> None:
    queued = [j for j in batch.jobs if j.state == "queued"]
    for i in range(0, len(queued), BATCH_PARALLELISM):
        if runner.stopping or batch.stopped:
            break
        chunk = await runner.start_jobs(queued[i : i + BATCH_PARALLELISM])
        if chunk:
            await asyncio.gather(*(_run_member(runner, batch, job) for job in chunk))
    if batch.stopped:
        await runner.cancel_queued([j for j in queued if j.state == "queued"], "batch")


async def _run_member(runner: Runner, batch: BatchJob, job: Job) -> None:
    # gather() wraps each coroutine in its own task, so job.task cancels only this one.
    outcome = await runner.invoke(job)
    await runner.finish(job, outcome)
    if batch.stop_on_error and outcome.status in ("failed", "timed_out") and not batch.stopped:
        batch.stopped = True
        for other in batch.jobs:
            if other is not job and other.state in ("starting", "running"):
                runner.cancel_running(other, "batch")
