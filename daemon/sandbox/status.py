"""What the pool reports (``info()``, under ``sandbox`` in /api/status; the
``sandbox_workers`` gauge) from its state: a base class of ``SandboxPool`` (pool.py), which
owns every attribute read here."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from typing import Any

from llmgine_daemon.sandbox.calls import SandboxLimits
from llmgine_daemon.sandbox.isolation import Cgroups, Isolation
from llmgine_daemon.sandbox.worker_process import WorkerProcess


class PoolStatus:
    size: int
    share: int
    limits: SandboxLimits
    isolation: Isolation
    uids: tuple[int, int] | None
    stats: dict[str, int]
    _cgroups: Cgroups | None
    _all: set[WorkerProcess]
    _idle: list[WorkerProcess]
    _busy: int
    _started: bool
    _stopped: bool
    _boot_task: asyncio.Future[None] | None
    _fill_task: asyncio.Future[None] | None
    _python_version: str
    _uid: int | None

    def info(self) -> dict[str, Any]:
        state, failure = self._state()
        iso = self.isolation
        return {
            "state": state,
            "isolation": iso.mechanism,
            "covers": list(iso.covers),
            "reason": iso.reason or failure or None,
            "namespaces": ["pid", "net", "ipc", "uts", "cgroup"] + (["user"] if iso.user_namespace else [])
            if iso.sandboxed
            else [],
            "process_cap": self._process_cap(),
            "memory_cap": "cgroup"
            if self._cgroups and "memory" in self._cgroups.parents
            else ("process tree" if iso.sandboxed else "rlimit"),
            # The uid of all workers (a worker reports it when it starts; as root, known from
            # the probe), or None when each has its own (sandbox.uids): then ``uids``.
            "uid": None if self.uids and iso.uid is not None else self._uid if self._uid is not None else iso.uid,
            "uids": sorted({w.uid for w in self._all if w.uid is not None}),
            "fresh_process_per_call": True,
            "session_share": self.share,
            "workers": self.size,
            "idle": len(self._idle),
            "busy": self._busy,
            "python": self._python_version,
            # The effective share, not the setting's 0 ("half the pool"): one figure in both places.
            "limits": {**asdict(self.limits), "session_share": self.share},
            **self.stats,
        }

    def _state(self) -> tuple[str, str | None]:
        """The pool's state and, when it failed, why: ``starting`` (probing the isolation, or
        starting the workers), ``standby`` (the isolation checked, no worker started: none was
        needed yet), ``running``, ``failed`` or ``stopped``."""
        if self._boot_task is None or self._stopped:
            return "stopped", None
        for task in (self._boot_task, self._fill_task):
            if task is None:
                return "standby", None
            if not task.done():
                return "starting", None
            if task.cancelled():
                return "stopped", None
            if task.exception() is not None:
                return "failed", str(task.exception())
        return "running", None

    def _worker_states(self) -> list[tuple[dict[str, str], float]]:
        if not self._started:
            return []
        return [({"state": "busy"}, float(self._busy)), ({"state": "idle"}, float(len(self._idle)))]

    def _process_cap(self) -> str:
        if self._has_pids_cgroup():
            return "cgroup"
        if os.geteuid() != 0 or self.isolation.uid is not None:
            return "rlimit"
        return "none"

    def _has_pids_cgroup(self) -> bool:
        return self._cgroups is not None and "pids" in self._cgroups.parents
