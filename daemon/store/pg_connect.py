"""Connecting to PostgreSQL and reading its errors, for store/postgres.py: ``connect`` (a
connection with the store's adaptations, or a StorageError naming the host and the reason, never
the password), ``classify`` (a psycopg error as store/errors.py's classes, so the API answers the
same codes on both backends) and ``redact`` (a URL without its password)."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import psycopg
from llmgine_daemon.store.errors import StorageBusy, StorageError, StorageFull, StorageRefused, StorageUnavailable
from psycopg import errors as pgerrors
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict

# Seconds a new connection may take, unless the URL says otherwise (``?connect_timeout=3``).
CONNECT_TIMEOUT_S = 10
# TCP keepalives on every connection to the server (libpq's settings, docs/durability.md): a
# connection whose network path died without a word (a NAT or firewall that forgot it, a
# server host that lost power, a cable) fails within about 25 s instead of waiting for ever:
# an idle connection (a reader in the pool, the cluster's LISTEN) is probed after 10 s of
# silence, every 5 s, and given up after 3 unanswered probes; data sent and not acknowledged
# for 25 s (tcp_user_timeout, Linux) ends it too. A URL that sets one of them keeps its own
# (``?keepalives_idle=60``); Unix-socket connections have none.
KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}


def _port(parts: SplitResult) -> int | None:
    """The URL's port; None if it has none or it is not a port number."""
    try:
        return parts.port
    except ValueError:
        return None


def redact(url: str) -> str:
    """``postgresql://user@host:port/db``: the URL without its password (or query)."""
    parts = urlsplit(url)
    user = f"{unquote(parts.username)}@" if parts.username else ""
    port = _port(parts)
    return f"{parts.scheme}://{user}{parts.hostname or ''}{f':{port}' if port else ''}{parts.path}"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{_port(parts) or 5432}"


# -- adaptation -----------------------------------------------------------------------------


class _BoolAsInt(Dumper):
    """Booleans are INTEGER 0/1 in the schema (as SQLite stores them)."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericAsNumber(Loader):
    """NUMERIC (SUM of BIGINT, AVG) as int or float, as SQLite returns them, not Decimal."""

    def load(self, data: Any) -> Any:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


_BUSY = (
    pgerrors.SerializationFailure,
    pgerrors.DeadlockDetected,
    pgerrors.LockNotAvailable,
    pgerrors.QueryCanceled,
)
_UNAVAILABLE = (pgerrors.TooManyConnections, pgerrors.AdminShutdown, pgerrors.CannotConnectNow)
_FULL = (pgerrors.DiskFull, pgerrors.OutOfMemory, pgerrors.ProgramLimitExceeded)


def classify(exc: BaseException) -> BaseException:
    """A psycopg error as the store's (store/errors.py); anything else as it is."""
    if not isinstance(exc, psycopg.Error):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, pgerrors.UntranslatableCharacter) or (isinstance(exc, psycopg.DataError) and "NUL" in text):
        return StorageRefused(text)  # psycopg's own check of a parameter, or the server's of JSON
    if isinstance(exc, _BUSY):
        return StorageBusy(text)
    if isinstance(exc, _UNAVAILABLE):
        return StorageUnavailable(text)
    if isinstance(exc, _FULL):
        return StorageFull(text)
    if isinstance(exc, psycopg.OperationalError):
        return StorageUnavailable(f"the database connection failed: {text}")
    return StorageError(text)


def url_connect_timeout(url: str) -> int:
    """Seconds a connection to ``url`` may take: the URL's own ``connect_timeout`` (at least 2,
    libpq's least), else CONNECT_TIMEOUT_S. A URL's 0 (libpq: wait for ever) is not taken: a
    server that accepts and never answers would hold the daemon for ever."""
    try:
        seconds = int(conninfo_to_dict(url).get("connect_timeout") or 0)
    except (ValueError, psycopg.ProgrammingError):
        return CONNECT_TIMEOUT_S
    return max(2, seconds) if seconds > 0 else CONNECT_TIMEOUT_S


def connect_args(url: str, timeout: int | None = None) -> dict[str, Any]:
    """libpq's settings for a connection to ``url`` besides the URL's own: the connect timeout
    (the URL's or ours, at most ``timeout``), the application name, and KEEPALIVES where the
    URL sets none of its own."""
    given = conninfo_to_dict(url)
    keepalives = {name: value for name, value in KEEPALIVES.items() if name not in given}
    seconds = url_connect_timeout(url)
    if timeout is not None:
        seconds = min(seconds, timeout)
    return {"connect_timeout": seconds, "application_name": "llmgined", **keepalives}


def connect(url: str, *, autocommit: bool = True, timeout: int | None = None) -> psycopg.Connection[Any]:
    """A connection with our adaptations; StorageError naming the host and the reason (never
    the password) if it cannot be made within the URL's ``connect_timeout`` (or
    CONNECT_TIMEOUT_S), and at most ``timeout`` seconds (libpq's least is 2)."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **connect_args(url, timeout))
    except psycopg.OperationalError as exc:
        # The server is down, restarting or refusing us. At start-up that is a reason not to
        # start (StorageUnavailable is a StorageError); at run time (a lost connection made again) the
        # request may be tried again: 503, like a connection lost in the middle of a write.
        raise StorageUnavailable(f"cannot connect to PostgreSQL at {_where(url)}: {_reason(exc, url)}") from None
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL at {_where(url)}: {_reason(exc, url)}") from None
    except Exception as exc:  # a malformed URL (psycopg.ProgrammingError is a psycopg.Error)
        raise StorageError(f"{redact(url)}: not a usable PostgreSQL URL: {exc}") from None
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.adapters.register_loader("numeric", _NumericAsNumber)
    return conn


def _reason(exc: BaseException, url: str) -> str:
    """libpq's reason, one line: its last non-empty line says it best."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    for line in lines:
        if "FATAL:" in line or "failed:" in line:
            text = line.split("FATAL:", 1)[-1].strip() if "FATAL:" in line else line
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "********")
    return text
