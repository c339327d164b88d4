"""Where the suite keeps what it writes: homes, databases, the test PostgreSQL servers.

``SCRATCH`` is a memory-backed temp dir (``/dev/shm``, tmpfs) when this machine has one with
room to spare, else ``/tmp``. The tests make thousands of SQLite files and PostgreSQL
databases; on a disk every one of them costs file creation and fsyncs (a PostgreSQL
``CREATE DATABASE`` from the template cost about 7x the CPU on ext4 than on tmpfs, SQLite's
migrations and commits about a third more: CONTRIBUTING.md, "Suite timings"). What the tests
check does not depend on it: they kill processes, never the machine, and nothing asserts a
file system type. ``LLMGINE_TEST_TMPDIR`` picks another folder (``/tmp`` to test on a disk),
and so does ``TMPDIR`` when it is set: the suite writes only where temp files are meant to go.

Paths stay short (AF_UNIX paths max out at 107 bytes): ``/dev/shm/lgXXXXXXXX``.

Only the standard library here: tests/postgres.py imports it before anything else.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

ENV = "LLMGINE_TEST_TMPDIR"
# tmpfs lives in memory: use it only with this much free (a test process keeps a PostgreSQL
# server of ~100 MB and a few homes there at a time; xdist runs four).
MIN_FREE = 2 * 2**30
MEMORY = Path("/dev/shm")


def _usable(path: Path) -> bool:
    """A world-writable sticky dir (like /tmp) we can write, with MIN_FREE bytes free."""
    try:
        st = path.stat()
        vfs = os.statvfs(path)
    except OSError:
        return False
    shared_ok = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH
    return bool(shared_ok) and os.access(path, os.W_OK | os.X_OK) and vfs.f_bavail * vfs.f_frsize >= MIN_FREE


def _pick() -> Path:
    chosen = os.environ.get(ENV) or os.environ.get("TMPDIR")
    if chosen:
        return Path(chosen)
    return MEMORY if _usable(MEMORY) else Path(tempfile.gettempdir())


SCRATCH = _pick()


def scratch_dir(prefix: str = "lg") -> Path:
    """A new private (0700) folder under SCRATCH; the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))


__all__ = ["SCRATCH", "scratch_dir"]
