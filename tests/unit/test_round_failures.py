"""observability/repeats.py: a background loop that fails round after round logs its failure
once, then a line a minute with how many were not logged, and one line when it works again."""

from __future__ import annotations

import logging

import pytest
from llmgine_daemon.observability.repeats import EVERY_S, RoundFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.rounds"]


def test_a_repeated_failure_is_one_line_a_minute_and_its_end_one_more(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.rounds")
    clock = Clock()
    rounds = RoundFailures(logging.getLogger("test.rounds"), "test", "cannot read", clock=clock)
    for _ in range(int(EVERY_S)):  # a round a second, for a minute
        rounds.failed(OSError("disk image is malformed"))
        clock.now += 1
    assert lines(caplog) == ["cannot read: disk image is malformed"]
    rounds.failed(OSError("disk image is malformed"))  # a minute after the first line
    assert lines(caplog)[1:] == [f"cannot read: disk image is malformed ({int(EVERY_S) - 1} more times in 60 s)"]
    # Another failure is logged at once; the end of the run, once.
    rounds.failed(OSError("database is locked"))
    clock.now += 5
    rounds.worked()
    rounds.worked()
    assert lines(caplog)[2:] == [
        "cannot read: database is locked",
        f"cannot read: works again after {int(EVERY_S) + 2} failed rounds in 65 s",
    ]
    # A later failure starts a new run: logged at once.
    rounds.failed(OSError("disk image is malformed"))
    assert lines(caplog)[4:] == ["cannot read: disk image is malformed"]


def test_an_unexpected_error_keeps_its_traceback_the_first_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.rounds")
    rounds = RoundFailures(logging.getLogger("test.rounds"), "test", "round failed", clock=Clock())
    try:
        raise KeyError("x")
    except KeyError as exc:
        rounds.failed(exc, trace=True)
        rounds.failed(exc, trace=True)
    records = [r for r in caplog.records if r.name == "test.rounds"]
    assert len(records) == 1 and records[0].exc_info is not None and "KeyError" in records[0].getMessage()
