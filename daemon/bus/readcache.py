"""Results of point reads kept while the database is unchanged.

A GET of a session costs one statement that joins three tables (bus/sessions.py); a client
that polls a session, or many clients watching the same one, ask the same question again and
again while nothing was written. ``ReadCache`` keeps the answers under the store's ``version()``
(store/db.py: the count of the daemon's write transactions, and SQLite's ``data_version`` for
other processes' commits, looked at every 0.1 s) and forgets all of them the first time the
version differs. So a client that was told its write was committed always reads it back, on
the next request.

The version is taken before the read, so a commit that lands between the two leaves an answer
newer than its version, which the next request finds stale and drops: never the other way
round. A store that cannot tell (PostgreSQL, where other nodes write) gives None, and nothing
is kept. Kept values are handed out as copies (callers may fill in fields, as a fork does).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from llmgine_daemon.store.base import BaseStore

T = TypeVar("T")

# At most this many answers are kept (a poller of 10,000 sessions does not grow the daemon).
MAX_KEPT = 1024


class ReadCache(Generic[T]):
    def __init__(self, store: BaseStore, max_kept: int = MAX_KEPT) -> None:
        self.store = store
        self.max_kept = max_kept
        self._version: object | None = None
        self._kept: dict[str, T] = {}
        # Figures for tests and the benchmarks.
        self.hits = 0
        self.misses = 0

    async def get(self, key: str, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s answer for ``key``: the kept one while the database is unchanged."""
        version = self.store.version()
        if version is None or version != self._version:
            self._kept.clear()
            self._version = version
        elif (kept := self._kept.get(key)) is not None:
            self.hits += 1
            return copy.copy(kept)
        self.misses += 1
        value = await read()
        # Kept under the version taken before the read, and only if no other read has moved
        # the cache to a newer version meanwhile (a read that went to the reader's thread).
        if version is not None and version == self._version and len(self._kept) < self.max_kept:
            self._kept[key] = copy.copy(value)
        return value
