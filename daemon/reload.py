"""``llmgined --reload``: restart the daemon when its source changes, for development (as
uvicorn's ``--reload``).

The process given ``--reload`` serves nothing itself: it runs the daemon as its child (the same
command line without the reload options), watches the ``*.py`` files under the reload
directories (``--reload-dir``, repeatable; default: this package's own directory, the source
tree of an editable install) and, when one is added, removed or modified, stops the child as
SIGTERM does (a graceful shutdown: executing commands end ``interrupted``, as at any restart)
and starts it again.

- The first child failing (a port in use, ...): the supervisor exits with its code.
- A child started after a change failing (the file being edited does not import yet): the
  next change starts it again.
- A child exiting 0 by itself (``POST /api/shutdown``, ``llmgine daemon stop``: the pid file
  names the child): the supervisor exits 0 too.
- SIGINT or SIGTERM: the child is stopped, then the supervisor exits 0.
- The supervisor killed: the child gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``, Linux).

Standard library only: it polls modification times (twice a second) instead of depending on a
file-watching package.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from llmgine_daemon.argv import without_options

POLL_SECONDS = 0.5
# How long a child gets to shut down before it is killed: its own server.shutdown_timeout
# (default 10 s) plus flushing and closing.
STOP_SECONDS = 30.0
PACKAGE_DIR = Path(__file__).resolve().parent
_PR_SET_PDEATHSIG = 1

Snapshot = dict[Path, int]


def snapshot(dirs: Iterable[Path]) -> Snapshot:
    """The modification time (ns) of every ``*.py`` file under ``dirs``."""
    found: Snapshot = {}
    for top in dirs:
        for path in top.rglob("*.py"):
            try:
                found[path] = path.stat().st_mtime_ns
            except OSError:  # removed while we looked
                continue
    return found


def first_change(before: Snapshot, after: Snapshot) -> Path | None:
    """A file added, removed or modified between two snapshots, if any."""
    for path in after.keys() | before.keys():
        if before.get(path) != after.get(path):
            return path
    return None


def _is_reload_dir(name: str) -> bool:
    """``--reload-dir`` or an abbreviation argparse takes for it (``--reload-d``; ``--reload``
    itself is the other option)."""
    return len(name) > len("--reload") and "--reload-dir".startswith(name)


def child_args(argv: list[str]) -> list[str]:
    """The command line without ``--reload`` and ``--reload-dir DIR`` (or ``=DIR``, or the
    option abbreviated as argparse allows: the child refused a ``--reload-d DIR`` left in its
    command line without ``--reload``)."""
    return without_options(argv, _is_reload_dir, lambda arg: arg == "--reload")


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    supervisor = os.getpid()

    def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != supervisor:  # it died between the fork and the prctl: no signal comes
            os._exit(1)

    return subprocess.Popen([sys.executable, "-m", "llmgine_daemon", *args], preexec_fn=die_with_parent)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def supervise(argv: list[str], dirs: list[Path]) -> int:
    """Run the daemon (``argv`` minus the reload options) until asked to stop, restarting it
    whenever a watched file changes; returns the exit code."""
    args = child_args(argv)
    # A plain flag the loop reads after each sleep: a handler that took a lock (Event.set)
    # could deadlock on the one the interrupted main thread held.
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watched = [d.resolve() for d in dirs] or [PACKAGE_DIR]
    print(f"llmgined: reloading when *.py files change in {', '.join(map(str, watched))}", file=sys.stderr)
    seen = snapshot(watched)
    child: subprocess.Popen[bytes] | None = _start(args)
    first = True
    try:
        while not stopping:
            time.sleep(POLL_SECONDS)
            if stopping:
                break
            code = child.poll() if child is not None else None
            if code is not None:
                if code == 0 or first:
                    return code
                print(f"llmgined: the daemon exited with {code}; waiting for a change", file=sys.stderr)
                child = None
            now = snapshot(watched)
            changed = first_change(seen, now)
            if changed is None:
                continue
            seen = now
            print(f"llmgined: {changed} changed, restarting", file=sys.stderr)
            if child is not None:
                _stop(child)
            child, first = _start(args), False
        return 0
    finally:
        if child is not None:
            _stop(child)
