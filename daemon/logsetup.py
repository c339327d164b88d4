"""The daemon's own log lines: where they go (LOG_FILE, rotated and private, or stderr), their
format, and the secrets masked in them whatever the format (``setup_logging``, called by
server.py at start)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from llmgine_daemon.observability.redact import RedactingFormatter
from llmgine_daemon.paths import StartupError
from llmgine_daemon.settings import PROVIDERS, Settings


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens, rotated ones included, is 0600 whatever the umask: logs can hold
    session contents.

    A file it cannot write (a full disk, a file system gone read-only) is one line on stderr per
    outage, not logging's "--- Logging error ---" and a traceback for every record: the lines
    are dropped meanwhile; the next one written ends the outage."""

    failing = False
    _failed = False

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)
        if self.failing and not self._failed:
            self.failing = False
            _say(f"llmgined: writing the log file {self.baseFilename} again")

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self._failed = True
        if not self.failing:
            self.failing = True
            _say(
                f"llmgined: cannot write the log file {self.baseFilename}: {error.strerror or error}; "
                "log lines are dropped until it can"
            )


def _say(line: str) -> None:
    """One line on stderr, if there is one to write to."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(line, file=sys.stderr, flush=True)


def setup_logging(settings: Settings) -> None:
    """Log lines to LOG_FILE (rotated) or stderr, structured (see observability/logs.py).

    The daemon additionally keeps records in its database for `llmgine logs`; that handler is
    added by Observability when the app starts.
    """
    from llmgine_daemon.observability.logs import ContextFilter, JsonFormatter, TextFormatter

    level = getattr(logging, settings["logging.level"].upper())
    handler: logging.Handler
    log_file = settings["logging.file"]
    if log_file:
        path = Path(log_file).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            handler = PrivateRotatingFileHandler(
                path, maxBytes=settings["logging.max_bytes"], backupCount=settings["logging.backup_count"]
            )
        except OSError as exc:
            raise StartupError(f"logging.file {str(path)!r}: cannot write: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    fmt = settings["logging.format"]
    # auto: a file is for machines (JSON lines); stderr is read by people, also through
    # `llmgine daemon logs`, so it gets text (with the same context as key=value pairs).
    inner: logging.Formatter
    if fmt == "text" or (fmt == "auto" and not log_file):
        inner = TextFormatter()
    else:
        inner = JsonFormatter()
    # Whatever the format, credentials are masked in the final text (docs/security.md).
    # The providers' configured keys too (a traceback's request headers, a proxy's message),
    # unless a placeholder a local server ignores ("ollama", "EMPTY"): masking every "ollama".
    keys = [settings[f"providers.{name}.api_key"] or "" for name in PROVIDERS]
    secrets = [settings["security.api_key_secret"] or "", *(k for k in keys if len(k) >= 12)]
    handler.setFormatter(RedactingFormatter(inner, secrets=secrets))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosqlite logs every statement at DEBUG; with LOG_LEVEL=debug that drowns our own
    # records (and each telemetry flush would log itself).
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
