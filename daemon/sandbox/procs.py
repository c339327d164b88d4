"""Processes on the host seen through /proc: the tasks a uid runs (what RLIMIT_NPROC counts), the
uids in use (sandbox.uids skips them) and a process's first child (bwrap's: the worker).
Standard library only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _processes() -> Iterator[tuple[str, int]]:
    """(pid, uid) of every process /proc shows now (one gone meanwhile is left out)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            try:
                yield entry, os.stat(f"/proc/{entry}").st_uid
            except OSError:
                pass


def count_tasks(uid: int) -> int:
    """Tasks (processes and threads) the uid runs now: RLIMIT_NPROC counts all of them."""
    total = 0
    for pid, owner in _processes():
        if owner == uid:
            try:
                total += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return total


def uids_running() -> set[int]:
    """The uids of the processes on the host now (as far as /proc shows them)."""
    return {owner for _, owner in _processes()}


def child_pid(parent: int) -> int | None:
    """The first child of ``parent`` (bwrap's: the worker, PID 1 of the sandbox)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return int(children[0])
    except (OSError, ValueError):
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    return int(entry)
            except (OSError, ValueError, IndexError):
                pass
    return None
