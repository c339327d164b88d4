"""``eventually``: wait for a condition instead of sleeping a fixed time.

    await eventually(lambda: sub.closed)                      # a plain predicate
    rows = await eventually(lambda: fetch_rows(client, sid))  # an async one; returns its value
    eventually_blocking(lambda: path.exists(), timeout=15)    # in synchronous tests

The predicate is tried at once, then every ``interval`` seconds, until it returns something
truthy (returned to the caller) or ``timeout`` seconds have passed (AssertionError naming the
last value). The timeout is a liveness bound, not a timing assertion: keep it generous, the
suite runs on loaded machines and in parallel.

For "nothing happened" checks, wait for a positive sign that it would have happened by now (a
later event stored, a dispatcher idle) with ``eventually``, then assert the absence: a fixed
sleep is too short on a loaded machine and wasted time on an idle one.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Generous: a failing test waits this long, a passing one never does. CI runs the suite on 2
# cores with 4 workers, and a start of a real daemon (PostgreSQL: migrations) or a CLI call has
# taken over 10 s there under load.
TIMEOUT = 30.0


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = TIMEOUT,
    interval: float = 0.01,
    message: str | None = None,
) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"{message or 'condition'} not reached in {timeout:g}s (last: {value!r})")
        await asyncio.sleep(interval)


def eventually_blocking(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'condition'} not reached in {timeout:g}s (last: {value!r})")
        time.sleep(interval)


def tcp_connected(pid: int, port: int) -> bool:
    """A predicate: process ``pid`` has a TCP connection to 127.0.0.1:``port`` (it is past its
    start-up, waiting on the server). Reads /proc, so Linux only."""
    return _holds_tcp(pid, port, column=2, state="01")  # the remote end, ESTABLISHED


def tcp_listening(pid: int, port: int) -> bool:
    """A predicate: process ``pid`` holds the socket listening on ``port`` (Linux /proc)."""
    return _holds_tcp(pid, port, column=1, state="0A")  # the local end, LISTEN


def _holds_tcp(pid: int, port: int, *, column: int, state: str) -> bool:
    """Whether ``pid`` has an open TCP socket whose address in ``column`` of /proc/net/tcp (1:
    local, 2: remote) has ``port``, in ``state``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == state and int(fields[column].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


__all__ = ["TIMEOUT", "eventually", "eventually_blocking", "tcp_connected", "tcp_listening"]
