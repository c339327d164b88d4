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


class SchemaTooNew(StorageError):
    """The database has migrations this code does not know: a newer llmgined migrated it.
    Start-up refuses (running old code on a newer schema could corrupt it)."""


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def classify(exc: sqlite3.Error) -> Exception:
    if is_busy(exc):
        return StorageBusy(str(exc))
    if "full" in str(exc).lower():
        return StorageFull(str(exc))
    return exc
