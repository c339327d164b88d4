"""The writer's failures to reach PostgreSQL, said once per outage.

While the server is down (restarting, failing over, unreachable) every write transaction
fails to make a connection, and each logged an ERROR line of its own: hundreds a second under
load, the same words each time. ``Outage`` lets the first one through, counts the others, and
says once a transaction commits again how many failed and for how long. Other failures (a
connection lost mid-transaction, a constraint, a full disk) are logged each time as before.
"""

from __future__ import annotations

import logging
import time

from llmgine_daemon.store.errors import StorageUnavailable

# The start of the message of a transaction that could not get a connection (pg_connect.connect).
UNREACHABLE = "cannot connect to PostgreSQL"


class Outage:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.since: float | None = None  # monotonic time of the first failure of this outage
        self.failed = 0  # transactions failed since

    def failure(self, err: BaseException, size: int) -> None:
        """A write transaction of ``size`` writes failed with ``err``: say so, unless it is one
        more failure to connect of an outage already said."""
        unreachable = isinstance(err, StorageUnavailable) and str(err).startswith(UNREACHABLE)
        if not unreachable:
            self.log.error("write transaction of %d failed: %s", size, err)
            return
        self.failed += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.error(
                "write transaction of %d failed: %s (further failures to connect are counted, not logged,"
                " until a write commits)",
                size,
                err,
            )

    def committed(self) -> None:
        """A write transaction committed: the end of the outage, if there was one."""
        if self.since is None:
            return
        self.log.info(
            "writes commit again, after %d write transaction(s) failed to connect in %.1f s",
            self.failed,
            time.monotonic() - self.since,
        )
        self.since, self.failed = None, 0
