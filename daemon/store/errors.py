"""What can go wrong in the store, as the rest of the daemon sees it: a busy database (another
process holds the lock past the deadline), a full disk, or another storage failure."""

from __future__ import annotations

import sqlite3


class StorageError(Exception):
    """The database could not do what was asked (not a bug in the caller)."""


class StorageBusy(StorageError):
    """Another process holds the database lock longer than the busy timeout.

    ``busy_timeout`` and ``waited`` (seconds, from when the write was queued) are set when a
    write gave up at its deadline; the API reports them in the error's details."""

    def __init__(self, message: str, *, busy_timeout: float | None = None, waited: float | None = None) -> None:
        super().__init__(message)
        self.busy_timeout = busy_timeout
        self.waited = waited


class StorageUnavailable(StorageBusy):
    """The database cannot be reached (PostgreSQL down, restarting, out of connections, or the
    connection lost): as busy, the request may be tried again (503), but nothing holds a lock."""


class StorageFull(StorageError):
    """The disk (or the database's page limit) is full."""


class StorageRefused(StorageError):
    """The database cannot hold a value as given: PostgreSQL's text holds no NUL character
    (U+0000), which SQLite stores. The request's fault (422), not the store's."""


class StorageDamaged(StorageError):
    """The database file is damaged (SQLite: "database disk image is malformed", "file is not
    a database"): no retry will help; the operator restores it from a backup. A read or write
    that finds it fails with this (503 STORAGE_DAMAGED, one log line), never a traceback."""


class SchemaTooNew(StorageError):
    """The database has migrations this code does not know: a newer llmgined migrated it.
    Start-up refuses (running old code on a newer schema could corrupt it)."""


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


# SQLite's primary result codes for a damaged file (the low byte of an extended code).
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
DAMAGED_HINT = "the file is damaged: restore it from a backup (docs/durability.md, Backups)"
# The telemetry file holds only logs and spans (store/telemetry.py).
TELEMETRY_DAMAGED_HINT = (
    "the file is damaged; it holds only logs and spans: restore it from a backup, "
    "or move it away (with its -wal and -shm) to start with none"
)


def is_damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def classify(exc: sqlite3.Error) -> Exception:
    if is_damaged(exc):
        return StorageDamaged(f"{exc}: {DAMAGED_HINT}")
    if is_busy(exc):
        return StorageBusy(str(exc))
    if "full" in str(exc).lower():
        return StorageFull(str(exc))
    return exc
