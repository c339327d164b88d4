"""What the zygote does after each call (``worker.py``): empty the call's /tmp, and look for
SysV IPC objects or POSIX message queues it left. Also used by the daemon for the directories
of isolation "none" (``isolation.remove_stale_dirs``). Standard library only: it runs inside
the sandbox.
"""

from __future__ import annotations

import contextlib
import os


def make_removable(path: str) -> None:
    """Give the owner back every directory under ``path`` (user code may chmod them to 0).
    Without recursion: a tree may be thousands of levels deep (os.walk raised RecursionError,
    and the zygote died after a call that had answered)."""
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.chmod(entry.path, 0o700, follow_symlinks=False)
                        stack.append(entry.path)
        except OSError:
            pass


def wipe(path: str) -> bool:
    """Empty ``path`` (the call's /tmp), deepest first and without recursion; False if
    anything is left (a path past PATH_MAX, say: the worker is then retired)."""
    make_removable(path)
    stack = [(path, False)]
    while stack:
        top, emptied = stack.pop()
        if emptied:
            if top != path:
                with contextlib.suppress(OSError):
                    os.rmdir(top)
            continue
        stack.append((top, True))
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, False))
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
        except OSError:
            pass
    try:
        return not os.listdir(path)
    except OSError:
        return False


def ipc_left() -> bool:
    """SysV IPC objects or POSIX message queues the call created: they would outlive it."""
    for name in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{name}") as fh:
                if len(fh.read().splitlines()) > 1:
                    return True
        except OSError:
            pass
    try:
        return bool(os.listdir("/dev/mqueue"))
    except OSError:
        return False
