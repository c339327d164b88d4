"""A background loop's failures in the log: the first of a run, then one line a minute while
it goes on, and one when the loop works again (``RoundFailures``).

The stream hub polls the event log every second, the webhook outbox and sender and the
scheduler run rounds about as often; with the database down, full or damaged each failed
round logged a line, about two a second for as long as it lasted (a damaged file: until an
operator came). Every failure still counts in ``background_round_failures_total{round}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from llmgine_daemon.observability import metrics

EVERY_S = 60.0  # while the same failure repeats, a line at most this often


class RoundFailures:
    def __init__(
        self,
        log: logging.Logger,
        round_name: str,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        *,
        expected: tuple[type[BaseException], ...] = (),
    ):
        self.log = log
        # With ``expected`` (the storage's errors, for the bus's loops), any other failure is
        # unexpected: logged with its traceback the first time.
        self.expected = expected
        self.round = round_name
        self.what = what  # "streams: cannot read the event log head"
        self.clock = clock
        self._last = ""  # the failure last logged ("" while the loop works)
        self._since = 0.0  # when the current run of failures began
        self._logged = 0.0  # when a line was last logged
        self._quiet = 0  # failures not logged since then
        self._count = 0  # failures in the current run

    def failed(self, exc: BaseException, *, trace: bool | None = None) -> None:
        """A round failed with ``exc`` (``trace``: an unexpected error, logged with its
        traceback the first time; by default, one not of ``expected`` when that is given)."""
        if trace is None:
            trace = bool(self.expected) and not isinstance(exc, self.expected)
        metrics.inc("background_round_failures_total", round=self.round)
        now, text = self.clock(), f"{type(exc).__name__}: {exc}" if trace else str(exc) or type(exc).__name__
        if not self._count:
            self._since = now
        self._count += 1
        if text == self._last and now - self._logged < EVERY_S:
            self._quiet += 1
            return
        if text == self._last:
            self.log.warning("%s: %s (%d more times in %.0f s)", self.what, text, self._quiet, now - self._logged)
        else:
            self.log.warning("%s: %s", self.what, text, exc_info=exc if trace else None)
        self._last, self._logged, self._quiet = text, now, 0

    def worked(self) -> None:
        """A round worked: after failures, one line saying so."""
        if self._count:
            elapsed = self.clock() - self._since
            self.log.info("%s: works again after %d failed rounds in %.0f s", self.what, self._count, elapsed)
            self._last, self._quiet, self._count = "", 0, 0
