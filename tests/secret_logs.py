"""A pytest plugin (loaded by tests/conftest.py): the test that logs a secret fails.

A handler on the root logger sees every record that reaches it, in every process pytest runs
in (each xdist worker has its own), with its traceback, formatted as a log line would be. A
line holding a credential is charged to the phase running at that moment (setup, call or
teardown of one test), and that phase's report is turned into a failure naming the secret.

What counts as a secret: the values the tests configure (API_KEY_SECRET and the like) and the
shapes of minted credentials. The root logger's level is left alone (changing it would change
what other tests see): llmgine's loggers run at the configured level (info in tests),
third-party ones at WARNING and up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from typing import Any

import pytest

# Secrets the tests configure (API_KEY_SECRET values and the like).
KNOWN = ("s3cr3t-marker", "s3cret-key", "do-not-show", "test-secret-key")
SHAPES = (
    re.compile(r"lg[ks]_[0-9a-f]{12}_[A-Za-z0-9_\-]{8,}"),  # a minted key or token, whole
    re.compile(r"(?i)bearer\s+(?!\*{8}|realm|\[redacted\])[^\s,'\"]{8,}"),
    re.compile(r"[?&]token=(?!\*{8})[^&\s'\"]{8,}"),
    re.compile(r"llmgine\.bearer\.(?!\*{8})\S{8,}"),
    re.compile(r"whsec_(?!\*{8})[A-Za-z0-9+/=]{16,}"),  # a webhook's secret
)


def find_secrets(text: str) -> list[str]:
    """The secrets in ``text``, each cut short (the report must not print them whole)."""
    found = [s for s in KNOWN if s in text]
    found += [m.group(0)[:24] + "..." for p in SHAPES for m in p.finditer(text)]
    return found


class SecretCatcher(logging.Handler):
    """Formats every record (traceback included) and keeps the lines that hold a secret."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.found: list[tuple[str, str]] = []  # (line, what was found in it)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken record is the logging call's bug, reported elsewhere
            return
        for secret in find_secrets(line):
            self.found.append((line, secret))

    def take(self) -> list[tuple[str, str]]:
        self.acquire()  # records may come from other threads (the store's, the sandbox pool's)
        try:
            found, self.found = self.found, []
        finally:
            self.release()
        return found


def masked(line: str) -> str:
    """``line`` fit for a test report: every secret in it cut to its first characters."""
    for known in KNOWN:
        line = line.replace(known, known[:3] + "***")
    for shape in SHAPES:
        line = shape.sub(lambda m: m.group(0)[:12] + "***", line)
    return line


CATCHER = SecretCatcher()


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(CATCHER)


def pytest_sessionfinish(session: pytest.Session) -> None:
    logging.getLogger().removeHandler(CATCHER)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, Any]:
    report = yield
    found = CATCHER.take()
    if found and report.outcome != "failed":
        lines = "\n".join(f"  {masked(secret)!r} in: {masked(line)[:300]}" for line, secret in found[:5])
        report.outcome = "failed"
        report.longrepr = f"secrets in the log during {report.when}:\n{lines}"
    elif found:
        report.sections.append(("secrets in the log", "\n".join(masked(s) for _, s in found[:5])))
    return report
