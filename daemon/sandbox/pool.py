"""The worker pool: runs user code (tools, handlers) in worker processes, never in the daemon.

    SandboxPool(size, limits)          ``await start()`` probes the isolation; ``warm()``
                                       spawns ``size`` workers (the first call does too);
                                       ``await stop()`` kills them all
    await pool.inspect(kind, code, fn) validate code: syntax, the function, its JSON Schema
    await pool.run(kind, code, fn, payload, context=...)   one call -> CallOutcome
    pool.info()                        what /api/status reports under ``sandbox``
    pool.bus_handler                   answers ``bus.publish/execute/call_tool`` from user code

Workers are clean interpreters (not forks of the daemon) started inside bubblewrap, in their
own session and process group, with an empty environment and no inherited descriptors but the
two pipes; see ``worker.py`` for the fork-per-call design and ``isolation.py`` for what the
sandbox sees, the identity it runs as, and the cgroups that cap its memory and processes.
``calls.py`` holds what a call is (limits, context, outcome) and checks what a worker sends
back; ``worker_process.py`` is the handle on one worker process.

Workers start when user code will run, not with the daemon (a worker is an interpreter in
bubblewrap: ~0.1 CPU-s to start, then its memory). ``start()`` only checks the isolation
(~0.02 CPU-s), removes a killed daemon's leftovers and makes the cgroups, so the daemon logs
at once whether user code can run; the state is ``standby`` until ``warm()``, which the bus
calls as soon as it has user code (stored tools or handlers at start, a handler another node
registered: bus/core.py, bus/usercode_handlers.py; registering validates code, a call). A
failed start is tried again after RETRY_START_S; a failed isolation probe is final.

Fair share: at depth 0 a session runs at most ``session_share`` calls at once (default half the
pool, at least 1); its further calls wait on its own queue: one session cannot take every worker.
Every wait on a worker is an await on its pipe (a spinning worker never blocks the loop). A call
past its deadline, a worker that dies or speaks garbage, and a cancelled call all cost the
worker: its process group is killed and a fresh one started in the background; no retry.
Nested calls (a handler awaiting ``bus.execute`` that runs another handler) get a semaphore per
depth, so a parent holding a worker never starves its own children: depth d only waits for
depth d+1, which cannot wait on anything beyond ``max_depth``. A level holds ``size + share``
calls, at most ``size`` of them one session's, so no session can fill a level for the others.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import sys
import time
from collections.abc import Awaitable
from typing import Any

from llmgine_daemon.aio import wait_discarded
from llmgine_daemon.observability import metrics
from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.calls import (
    SANDBOX_UNAVAILABLE,
    TIMEOUT,
    WORKER_CRASHED,
    BusHandler,
    CallContext,
    CallOutcome,
    LogBudget,
    LogHandler,
    SandboxLimits,
    SandboxUnavailable,
    SessionShares,
    answer_bus,
    call_error,
    checked_outcome,
    is_description,
    log_unexpected,
    wait_started,
)
from llmgine_daemon.sandbox.isolation import (
    Cgroups,
    Isolation,
    probe,
    remove_stale_dirs,
)
from llmgine_daemon.sandbox.status import PoolStatus
from llmgine_daemon.sandbox.worker_process import (
    OVERHEAD_PROCESSES,
    WorkerProcess,
    adopt,
    describe_failure,
    launch,
    nproc_limit,
    wait_briefly,
    worker_config,
    worker_uid,
)
from llmgine_daemon.settings_parsers import uid_bounds

log = logging.getLogger("llmgine.sandbox")

SPAWN_TIMEOUT = 15.0
RETRY_START_S = 30.0  # after a failed start of the workers, warm() and calls try again after this
# sandbox_calls_total's outcome label for each failure code (anything else: "error").
_OUTCOMES = {TIMEOUT: "timeout", WORKER_CRASHED: "crash", SANDBOX_UNAVAILABLE: "unavailable"}
_PROBED: dict[tuple[str, ...], Isolation] = {}
# Memory the zygote itself needs inside the worker's memory cgroup, on top of the call's limit.
ZYGOTE_MEMORY = 64 * 2**20


class SandboxPool(PoolStatus):
    def __init__(
        self,
        size: int,
        limits: SandboxLimits | None = None,
        *,
        isolation: str = "auto",
        python: str | None = None,
        user: str = "nobody",
        group: str = "",
        uids: str = "",
    ) -> None:
        self.size = max(1, size)
        self.limits = limits or SandboxLimits()
        self.isolation_mode = "bubblewrap" if isolation == "namespaces" else isolation
        self.python = python or sys.executable
        self.user = user
        self.group = group
        self.uids = uid_bounds(uids)  # a root daemon's worker uids (worker_uid), or None
        self._claimed: set[int | None] = set()  # uids of workers being started
        self._lent: set[int | None] = set()  # uids of session tokens' MCP servers (lend_uid)
        self._picking = asyncio.Lock()
        self.share = self.limits.session_share or max(1, self.size // 2)
        self._shares = SessionShares(self.share)
        self._nested = SessionShares(self.size)  # per (session, depth) above depth 0
        self.bus_handler: BusHandler | None = None
        self.log_handler: LogHandler | None = None
        self.isolation = Isolation("pending")  # until the probe has run
        self._cgroups: Cgroups | None = None
        self._idle: list[WorkerProcess] = []
        self._busy = 0
        self._sems: dict[int, asyncio.Semaphore] = {}
        self._spawning: set[asyncio.Task[None]] = set()  # background spawns and reaps
        self._pending = 0  # replacement workers being started
        self._all: set[WorkerProcess] = set()
        self._started = False
        self._stopped = False
        self._boot_task: asyncio.Future[None] | None = None  # the isolation probe
        self._fill_task: asyncio.Future[None] | None = None  # the workers' start (warm())
        self._fill_failed = 0.0  # when the last start of the workers failed (time.monotonic)
        self._python_version = ""
        self._uid: int | None = None
        self._counter = 0
        self.stats = {"calls": 0, "timeouts": 0, "crashes": 0, "replaced": 0, "failed": 0}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin checking the isolation in the background: the daemon answers at once. The
        workers start at ``warm()`` or at the first call, which waits for them (a failure to
        start is logged and fails calls, clearly)."""
        metrics.gauge_callback("sandbox_workers", self._worker_states)
        self._boot_task = self._quiet(asyncio.ensure_future(self._boot()))

    def warm(self) -> None:
        """Start the workers in the background unless they are started: the daemon has user
        code that will run. Idempotent; after a failed start (a spawn timeout on a busy machine,
        fork failing), again once RETRY_START_S passed; nothing once the pool is stopping."""
        if self._boot_task is not None and not self._stopped and self._may_fill(self._fill_task):
            self._fill_task = self._quiet(asyncio.ensure_future(self._fill()))

    def _may_fill(self, fill: asyncio.Future[None] | None) -> bool:
        """Never started, or failed a while ago (not starting, started, stopped; nor when the
        isolation failed: the machine will not change)."""
        if fill is None:
            return True
        boot, failed = self._boot_task, fill.done() and not fill.cancelled() and fill.exception() is not None
        probed = boot is not None and boot.done() and not boot.cancelled() and boot.exception() is None
        return failed and probed and time.monotonic() - self._fill_failed >= RETRY_START_S

    @staticmethod
    def _quiet(task: asyncio.Future[None]) -> asyncio.Future[None]:
        # Reported by info() and by each call; retrieved here (asyncio stays quiet), and logged
        # unless it is SandboxUnavailable, which was logged where it was raised.
        task.add_done_callback(functools.partial(log_unexpected, log))
        return task

    async def wait_probed(self) -> None:
        """Wait until the isolation is known, starting no worker (SandboxUnavailable: none)."""
        if self._boot_task is None:
            raise SandboxUnavailable("the sandbox is not running")
        await wait_started(self._boot_task)

    async def wait_ready(self) -> None:
        """Start the workers if need be and wait until they are up (or SandboxUnavailable)."""
        self.warm()
        if self._fill_task is None:
            raise SandboxUnavailable("the sandbox is not running")
        await wait_started(self._fill_task)

    async def _boot(self) -> None:
        key = (self.isolation_mode, self.python, self.user, self.group)
        if key not in _PROBED:  # one probe per process: the machine does not change
            _PROBED[key] = await probe(self.isolation_mode, self.python, self.user, self.group)
        self.isolation = _PROBED[key]
        if self.isolation.mechanism == "unavailable":
            log.error("sandbox: user code is disabled: %s", self.isolation.reason)
            raise SandboxUnavailable(f"user code cannot run: {self.isolation.reason}")
        if self.isolation.mechanism == "none":
            log.warning('sandbox: isolation "none": user code runs WITHOUT isolation, reading what this daemon can')
        await asyncio.to_thread(remove_stale_dirs)
        self._cgroups = await Cgroups.create()
        self._started = True
        log.info(
            "sandbox: isolation %s, cgroups %s; %d workers, started when user code first needs them",
            self.isolation.mechanism,
            ",".join(self._cgroups.controllers) if self._cgroups else "none",
            self.size,
        )

    async def _fill(self) -> None:
        await self.wait_probed()
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        started = [w for w in workers if isinstance(w, WorkerProcess)]
        failed = [w for w in workers if isinstance(w, BaseException)]
        if failed:  # none is used: those that started stop (the next start makes them all again)
            for w in started:
                w.kill()
            await asyncio.gather(*(self._reap(w) for w in started), return_exceptions=True)
            self._fill_failed = time.monotonic()
            log.error("sandbox: cannot start a worker: %s (tried again in %gs)", failed[0], RETRY_START_S)
            if isinstance(failed[0], SandboxUnavailable):
                raise failed[0]
            raise SandboxUnavailable(f"cannot start a sandbox worker: {failed[0]}") from failed[0]
        for w in started:
            self._release(w)
        uids = sorted({w.uid for w in started if w.uid is not None}) or [self._uid]
        log.info("sandbox: %d workers started, uid %s", self.size, ", ".join(map(str, uids)))

    async def stop(self) -> None:
        self._started = False
        self._stopped = True
        for boot in (self._fill_task, self._boot_task):
            if boot is not None:
                boot.cancel()
                await asyncio.gather(boot, return_exceptions=True)
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        workers = list(self._all)
        self._idle.clear()
        for w in workers:
            w.kill()
        await asyncio.gather(*(self._reap(w) for w in workers), return_exceptions=True)
        await wait_discarded()  # workers whose start was cancelled half-way
        if self._cgroups is not None:
            await self._cgroups.close()
            self._cgroups = None

    # -- calls -----------------------------------------------------------------------------

    async def inspect(self, kind: str, code: str, function: str | None, *, share: str | None = None) -> CallOutcome:
        """Compile and load ``code`` in a worker; the result describes the function. ``share``:
        the session registering it (its module code runs: it takes that session's share; the
        bus stays closed to it)."""
        context = CallContext(session_id=None, kind=kind, name=function or "", share=share)
        run = frames.Run(
            call_id=context.call_id,
            op="inspect",
            kind=kind,
            code=code,
            function=function,
            deadline=min(self.limits.deadline, 10.0),
            max_output=self.limits.max_output,
            max_result=self.limits.max_result,
        )
        outcome = await self._run(run, context)
        if outcome.ok and not is_description(outcome.result):
            return CallOutcome(
                ok=False,
                duration_ms=outcome.duration_ms,
                error=call_error(
                    "CODE_ERROR", "the code interfered with its worker: the description it sent back is not one"
                ),
            )
        return outcome

    async def run(
        self,
        kind: str,
        code: str,
        function: str | None,
        payload: Any,
        *,
        context: CallContext,
        deadline: float | None = None,
    ) -> CallOutcome:
        """Run one call. ``payload``: the arguments (tool) or the record (handlers)."""
        run = frames.Run(
            call_id=context.call_id,
            op="call",
            kind=kind,
            code=code,
            function=function,
            payload=json.dumps(payload).encode(),
            deadline=min(deadline or self.limits.deadline, self.limits.max_timeout),
            max_output=self.limits.max_output,
            max_result=self.limits.max_result,
        )
        self.stats["calls"] += 1
        outcome = await self._run(run, context)
        if not outcome.ok:
            self.stats["failed"] += 1
        failure = (outcome.error or {}).get("code")
        metrics.inc(
            "sandbox_calls_total", kind=kind, outcome="ok" if outcome.ok else _OUTCOMES.get(str(failure), "error")
        )
        metrics.observe("sandbox_call_duration_seconds", outcome.duration_ms / 1000.0, kind=kind)
        return outcome

    async def _run(self, run: frames.Run, context: CallContext) -> CallOutcome:
        try:
            await self.wait_ready()
        except SandboxUnavailable as exc:
            return CallOutcome(ok=False, error=call_error(SANDBOX_UNAVAILABLE, str(exc)))
        if not self._started:
            return CallOutcome(ok=False, error=call_error(SANDBOX_UNAVAILABLE, "the sandbox is stopping"))
        depth = min(max(context.depth, 0), self.limits.max_depth)
        shares, key, size = self._shares, context.share or context.session_id, self.size
        if depth:  # nested: rides on its parent's place, but one session's chains (a tool's
            # bus.call_tool, handlers of events it published) never hold a whole level.
            shares, key, size = self._nested, (context.session_id, depth), self.size + self.share
        async with shares.hold(key), self._sems.setdefault(depth, asyncio.Semaphore(size)):
            return await self._on_worker(run, context)

    async def _on_worker(self, run: frames.Run, context: CallContext) -> CallOutcome:
        try:
            worker = await self._acquire()
        except SandboxUnavailable as exc:
            return CallOutcome(ok=False, error=call_error(SANDBOX_UNAVAILABLE, str(exc)))
        self._busy += 1
        healthy = False
        try:
            outcome, healthy = await self._call(worker, run, context)
            return outcome
        finally:
            self._busy -= 1
            worker.child_pid = None
            if healthy:
                self._release(worker)
            else:
                self._discard(worker)

    async def _call(self, worker: WorkerProcess, run: frames.Run, context: CallContext) -> tuple[CallOutcome, bool]:
        started = time.monotonic()
        done: frames.Done | None = None
        max_frame = self.limits.max_result + 4 * self.limits.max_output + 65536
        worker.calls += 1
        ooms = Cgroups.oom_kills(worker.cgroups)
        logged = LogBudget(self.limits)

        def elapsed() -> float:
            return round((time.monotonic() - started) * 1000, 3)

        def over_memory() -> CallOutcome | None:
            if Cgroups.oom_kills(worker.cgroups) <= ooms:
                return None
            limit = self.limits.memory_bytes // 2**20
            return CallOutcome(
                ok=False,
                duration_ms=elapsed(),
                error=call_error(
                    "EXECUTION_FAILED",
                    f"MemoryError: the call used more than {limit} MiB (sandbox.memory_mb), "
                    "counting every process it started; it was stopped",
                    type="MemoryError",
                    limit_mb=limit,
                ),
            )

        # The kernel's memory cgroup kills one process at a time, and the call may go on with
        # the rest: when it kills any, the whole worker goes (the call is over its limit).
        oom_watch = asyncio.ensure_future(self._watch_oom(worker, ooms)) if worker.cgroups else None
        try:
            async with asyncio.timeout(run.deadline):
                worker.send(run)
                while True:
                    frame = await worker.read(max_frame)
                    if isinstance(frame, frames.Started):
                        worker.child_pid = frame.pid
                    elif isinstance(frame, frames.BusRequest):
                        worker.send(await answer_bus(self.bus_handler, context, frame))
                    elif isinstance(frame, frames.Log):
                        logged.record(self.log_handler, context, frame)
                    elif isinstance(frame, frames.Done):
                        done = frame
                    elif isinstance(frame, frames.Exited):
                        break
                    else:
                        raise frames.FrameError(f"unexpected {type(frame).__name__} frame")
        except TimeoutError:
            self.stats["timeouts"] += 1
            worker.kill()
            return CallOutcome(
                ok=False,
                duration_ms=elapsed(),
                error=call_error(
                    TIMEOUT,
                    f"the call did not finish within {run.deadline:g} s; its worker was killed and replaced",
                    deadline_s=run.deadline,
                ),
            ), False
        except (asyncio.IncompleteReadError, ConnectionError, frames.FrameError) as exc:
            worker.kill()
            memory = over_memory()
            if memory is not None:
                return memory, False
            self.stats["crashes"] += 1
            metrics.inc("sandbox_worker_crashes_total")
            returncode = await wait_briefly(worker.proc)
            return CallOutcome(
                ok=False,
                duration_ms=elapsed(),
                error=call_error(
                    WORKER_CRASHED,
                    f"the worker failed during the call: {describe_failure(exc, returncode)}",
                ),
            ), False
        except BaseException:  # cancelled (a command timeout): the child may still be running
            worker.kill()
            raise
        finally:
            if oom_watch is not None:
                oom_watch.cancel()
        healthy = not frame.retire
        memory = over_memory()  # whatever the call answered (the zygote's watch may have missed
        if memory is not None:  # a fast allocation that crossed both limits between two looks)
            return memory, False
        if done is None:
            self.stats["crashes"] += 1
            metrics.inc("sandbox_worker_crashes_total")
            # The zygote survived and reported how the child ended: the worker stays.
            return CallOutcome(
                ok=False,
                duration_ms=elapsed(),
                error=call_error(
                    WORKER_CRASHED,
                    f"the process running the call died before answering ({frame.status})",
                    status=frame.status,
                ),
            ), healthy
        return checked_outcome(done, run, elapsed()), healthy

    @staticmethod
    async def _watch_oom(worker: WorkerProcess, ooms: int) -> None:
        while Cgroups.oom_kills(worker.cgroups) <= ooms:
            await asyncio.sleep(0.1)
        worker.kill()

    # -- workers ---------------------------------------------------------------------------

    async def _acquire(self) -> WorkerProcess:
        while self._idle:
            worker = self._idle.pop()
            if worker.proc.returncode is None:
                return worker
            self._schedule(self._reap(worker))
        return await self._spawn()

    def _release(self, worker: WorkerProcess) -> None:
        if self._started and len(self._idle) < self.size:
            self._idle.append(worker)
        else:
            worker.kill()
            self._schedule(self._reap(worker))

    def _discard(self, worker: WorkerProcess) -> None:
        self.stats["replaced"] += 1
        worker.kill()
        self._schedule(self._reap(worker))
        if self._started and len(self._idle) + self._busy + self._pending < self.size:
            self._schedule(self._top_up())

    async def _top_up(self) -> None:
        self._pending += 1
        try:
            worker = await self._spawn()
        except SandboxUnavailable as exc:
            log.error("sandbox: cannot replace a worker: %s", exc)
            return
        finally:
            self._pending -= 1
        self._release(worker)

    def _schedule(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _free_uid(self) -> int | None:
        """``worker_uid`` past every uid a worker or server holds or is being given (/proc and
        the user database read in a thread). Under ``_picking``: the caller holds the uid
        (``_claimed``, ``_lent``) before it lets go."""
        taken = self._claimed | self._lent | {w.uid for w in self._all}
        return await asyncio.to_thread(worker_uid, self.isolation, self.uids, taken)

    async def lend_uid(self) -> int | None:
        """A uid of ``sandbox.uids`` no worker or other server holds, for one run of a session
        token's stdio MCP server of a root daemon (mcp/connection.py): the kernel's per-uid
        counts are then its own, as a worker's are. ``sandbox.user`` once the range is used up
        (or without it); None for a daemon not run as root. ``give_back_uid`` when it ended."""
        async with self._picking:
            uid = await self._free_uid()
            if uid != self.isolation.uid:
                self._lent.add(uid)
            return uid

    def give_back_uid(self, uid: int | None) -> None:
        self._lent.discard(uid)

    async def _spawn(self) -> WorkerProcess:
        async with self._picking:
            uid = await self._free_uid()
            self._claimed.add(uid)  # until it is in _all (or failed to start)
        try:
            return await self._start_worker(uid)
        finally:
            self._claimed.discard(uid)

    async def _start_worker(self, uid: int | None) -> WorkerProcess:
        self._counter += 1
        name = f"w{self._counter}"
        iso = self.isolation
        cgroups = (
            self._cgroups.make(
                name, self.limits.processes + OVERHEAD_PROCESSES, self.limits.memory_bytes + ZYGOTE_MEMORY
            )
            if self._cgroups is not None
            else []
        )
        nproc = nproc_limit(iso, self.limits, self._has_pids_cgroup(), uid)
        config, cwd, tmpdir = worker_config(iso, self.limits, cgroups, name, nproc, uid)
        try:
            proc = await launch(iso, self.limits, config, cwd)
        except BaseException as exc:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            if self._cgroups is not None:
                await self._cgroups.release(cgroups)
            if isinstance(exc, OSError):
                raise SandboxUnavailable(f"cannot start a sandbox worker: {exc}") from exc
            raise
        worker = WorkerProcess(proc, tmpdir, cgroups, pidns=iso.sandboxed)
        worker.uid = uid
        self._all.add(worker)
        try:
            ready = await asyncio.wait_for(worker.read(65536), SPAWN_TIMEOUT)
            if not isinstance(ready, frames.Ready):
                raise frames.FrameError(f"expected Ready, got {type(ready).__name__}")
            if iso.sandboxed and cgroups:
                adopt(worker, cgroups)
        except BaseException as exc:
            worker.kill()
            await self._reap(worker)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SandboxUnavailable(f"worker did not start: {describe_failure(exc, None)}") from None
        self._python_version = ready.python
        self._uid = ready.uid if iso.uid is None else uid
        return worker

    async def _reap(self, worker: WorkerProcess) -> None:
        try:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
            await asyncio.wait_for(worker.proc.wait(), 5)
        except (TimeoutError, ProcessLookupError):
            pass
        self._forget(worker)
        if self._cgroups is not None:
            await self._cgroups.release(worker.cgroups)

    def _forget(self, worker: WorkerProcess) -> None:
        self._all.discard(worker)
        if worker.tmpdir is not None:
            shutil.rmtree(worker.tmpdir, ignore_errors=True)
