"""Credentials: API keys and session tokens. The domain side; the edge is api/guard.py.

    API key        lgk_<key_id>_<secret>   full access; `llmgine auth key create`, or the one
                                           llmgined mints for the local CLI (kind 'local')
    session token  lgs_<token_id>_<secret> one session's endpoints and its engines; ends with
                                           the session

Only sha256(secret) is stored, in the database and in memory; a presented secret is hashed and
compared with ``hmac.compare_digest``. Verification is in memory (no database round trip per
request); creating and revoking write through to the store first, then update memory.

``on_revoked`` listeners get the credential ids that stopped being valid (a revoked key, the
tokens of an ended session), so the edge can close WebSockets opened with them.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmgine_daemon.bus.errors import BusError, not_found
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.paths import clear_stale_temps, write_private
from llmgine_daemon.protocol import ErrorCode, now_iso, to_iso
from llmgine_daemon.store.db import Store

log = logging.getLogger("llmgine.auth")

KEY_PREFIX = "lgk_"
TOKEN_PREFIX = "lgs_"
LOCAL_KEY_NAME = "local-cli"
# Persist last_used_at at most this often per key: it is informational, not worth a write
# per request.
LAST_USED_EVERY = 60.0
# In a cluster (several nodes on one database): how often a node re-reads keys and tokens (a key
# revoked on another node stops working here within this), and how often at most an unknown
# credential makes it re-read them at once (a key made on another node works here at once).
SYNC_EVERY = 1.0
MISS_SYNC_EVERY = 0.2
# How many verified credentials Credentials.verify remembers (cleared when full).
VERIFIED_MAX = 256
_ID = re.compile(r"^[0-9a-f]{12}$")

PrincipalKind = Literal["owner", "secret", "key", "session"]
RevokedListener = Callable[[list[str]], None]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# A fixed digest to compare against when the id is unknown, so that path costs the same.
_DUMMY = digest("llmgine-dummy")


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. ``credential_id`` keys rate limits and WebSocket tracking."""

    kind: PrincipalKind
    credential_id: str
    session_id: str | None = None  # set for session tokens: the only session they open

    @property
    def full_access(self) -> bool:
        return self.session_id is None


class AuthFailure(Exception):
    """A credential was presented and is not (or no longer) valid. The message is safe to
    show: it never contains the credential."""


@dataclass
class KeyRecord:
    key_id: str
    name: str | None
    kind: str
    digest: str
    created_at: str
    expires_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None
    persisted_used: float = 0.0  # monotonic time of the last last_used_at write
    used_at: float = 0.0  # wall-clock time of the last use in this process (0: none yet)

    @property
    def last_used(self) -> str | None:
        """When the key was last used: this process's latest use, else the stored one."""
        if self.used_at:
            return to_iso(dt.datetime.fromtimestamp(self.used_at, dt.UTC))
        return self.last_used_at

    @property
    def prefix(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}"

    def state(self, now: str) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass
class TokenRecord:
    token_id: str
    session_id: str
    digest: str
    created_at: str


def _split(text: str, prefix: str) -> tuple[str, str] | None:
    if not text.startswith(prefix):
        return None
    ident, sep, secret = text[len(prefix) :].partition("_")
    if not sep or not _ID.match(ident) or not secret:
        return None
    return ident, secret


def local_key_name(path: Path) -> str:
    """The name of the local CLI key kept in ``path`` on this host."""
    where = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{LOCAL_KEY_NAME}@{socket.gethostname()[:64]}/{where}"


def _ident(presented: str) -> str | None:
    """The id part of a key or token (``lgk_<id>_...``), None for anything else."""
    for prefix in (KEY_PREFIX, TOKEN_PREFIX):
        split = _split(presented, prefix)
        if split is not None:
            return split[0]
    return None


def _read_credentials(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    keys = conn.execute(
        "SELECT key_id, name, kind, digest, created_at, expires_at, last_used_at, revoked_at FROM api_keys"
    ).fetchall()
    # Tokens of sessions that ended while nobody was listening are dead too.
    tokens = conn.execute(
        "SELECT t.token_id, t.session_id, t.digest, t.created_at FROM session_tokens t"
        " JOIN sessions s ON s.session_id = t.session_id"
        " WHERE t.revoked_at IS NULL AND s.status = 'active'"
    ).fetchall()
    return keys, tokens


def _new_secret() -> tuple[str, str]:
    return secrets.token_hex(6), secrets.token_urlsafe(32)


class Credentials:
    def __init__(self, store: Store, api_key_secret: str | None = None) -> None:
        self.store = store
        self.api_key_secret = api_key_secret
        self.keys: dict[str, KeyRecord] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self._listeners: list[RevokedListener] = []
        self._pending: set[asyncio.Task[None]] = set()
        # Credentials verified before, by the text presented: a request with one skips the
        # parse and the SHA-256 (bench/README.md, issue #18). An entry holds only while its
        # record is still the one in keys/tokens (a re-read or an ended session replaces or
        # drops it) and a key's state is checked every time, so revocation and expiry apply
        # at once. Only verified credentials get in; it is cleared when full.
        self._verified: dict[str, tuple[KeyRecord | TokenRecord, Principal]] = {}
        # Several nodes on one database (a cluster): keys and tokens also change elsewhere, and
        # this node catches up with sync() (every SYNC_EVERY seconds, and on an unknown id).
        self.shared = False
        self.synced_at = 0.0
        self._sync_started = float("-inf")
        self._sync_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self) -> None:
        keys, tokens = await self.store.read(_read_credentials)
        self.keys = {row[0]: KeyRecord(*row) for row in keys}
        self.tokens = {row[0]: TokenRecord(*row) for row in tokens}

    async def sync(self) -> None:
        """Catch up with keys and tokens other nodes sharing the database made, revoked or ended
        (a cluster on PostgreSQL; one node alone changes them only through this object). What
        stopped being valid is told to the revocation listeners (its WebSockets close)."""
        self._sync_started = time.monotonic()
        keys, tokens = await self.store.read(_read_credentials)
        gone: list[str] = []
        fresh: dict[str, KeyRecord] = {}
        for row in keys:
            record = KeyRecord(*row)
            known = self.keys.get(record.key_id)
            if known is not None:  # keep this process's bookkeeping of its use
                record.used_at, record.persisted_used = known.used_at, known.persisted_used
                if known.revoked_at is None and record.revoked_at is not None:
                    gone.append(record.key_id)
            fresh[record.key_id] = record
        gone += [key_id for key_id in self.keys if key_id not in fresh]
        new_tokens = {row[0]: TokenRecord(*row) for row in tokens}
        gone += [token_id for token_id in self.tokens if token_id not in new_tokens]
        self.keys, self.tokens = fresh, new_tokens
        self.synced_at = time.monotonic()
        self._revoked(gone)

    async def sync_on_miss(self, presented: str) -> bool:
        """A credential this node does not know may be one another node just made: re-read (one
        at a time, at most every MISS_SYNC_EVERY seconds: a miss right after a re-read waits for
        the next) and say whether it is known now. A re-read that began after this request
        asked answers it without another."""
        ident = _ident(presented)
        if not self.shared or ident is None:
            return False
        asked = time.monotonic()
        async with self._sync_lock:
            if ident in self.keys or ident in self.tokens:
                return True  # a sync that ran while this one waited brought it
            if self._sync_started >= asked:
                return False  # that sync began after we asked and did not find it
            wait = MISS_SYNC_EVERY - (time.monotonic() - self._sync_started)
            if wait > 0:
                await asyncio.sleep(wait)
            await self.sync()
        return ident in self.keys or ident in self.tokens

    async def flush(self) -> None:
        """Wait for pending last-used writes (called on shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def on_revoked(self, listener: RevokedListener) -> None:
        self._listeners.append(listener)

    def _revoked(self, ids: list[str]) -> None:
        if ids:
            for listener in list(self._listeners):
                listener(ids)

    # -- verification --------------------------------------------------------------------

    def verify(self, presented: str) -> Principal:
        """The principal for a presented credential, or AuthFailure. In memory, no I/O."""
        known = self._verified.get(presented)
        if known is not None:
            record, principal = known
            if isinstance(record, KeyRecord):
                if self.keys.get(record.key_id) is record:
                    self._use_key(record)
                    return principal
            elif self.tokens.get(record.token_id) is record:
                return principal
            del self._verified[presented]  # re-read, or gone: verified afresh below
        key = _split(presented, KEY_PREFIX)
        if key is not None:
            record = self.keys.get(key[0])
            ok = hmac.compare_digest(digest(key[1]), record.digest if record else _DUMMY)
            if record is None or not ok:
                raise AuthFailure("invalid API key")
            self._use_key(record)
            return self._remember(presented, record, Principal("key", record.key_id))
        token = _split(presented, TOKEN_PREFIX)
        if token is not None:
            trecord = self.tokens.get(token[0])
            ok = hmac.compare_digest(digest(token[1]), trecord.digest if trecord else _DUMMY)
            if trecord is None or not ok:
                raise AuthFailure("invalid or expired session token (tokens end with their session)")
            return self._remember(presented, trecord, Principal("session", trecord.token_id, trecord.session_id))
        secret = self.api_key_secret
        if secret and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), secret.encode()):
            return Principal("secret", "api_key_secret")
        raise AuthFailure("invalid API key")

    def _use_key(self, record: KeyRecord) -> None:
        """AuthFailure unless the key is active (revoked and expiring keys are checked on every
        use); else note the use."""
        if record.revoked_at is not None or record.expires_at is not None:  # else active
            state = record.state(now_iso())
            if state != "active":
                raise AuthFailure(f"API key {record.prefix} is {state}")
        self._touch(record)

    def _remember(self, presented: str, record: KeyRecord | TokenRecord, principal: Principal) -> Principal:
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.clear()
        self._verified[presented] = (record, principal)
        return principal

    def _touch(self, record: KeyRecord) -> None:
        """Note the use (a float per request); store it at most every LAST_USED_EVERY."""
        record.used_at = time.time()
        mono = time.monotonic()
        if mono - record.persisted_used < LAST_USED_EVERY:
            return
        record.persisted_used = mono
        now = record.last_used_at = now_iso()
        key_id = record.key_id
        loop = asyncio.get_running_loop()

        async def persist() -> None:
            try:
                await self.store.write(
                    lambda c: c.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key_id))
                )
            except Exception as exc:  # informational only; never fail a request for it
                log.warning("could not record last use of key %s: %s", key_id, exc)

        # A fresh context: this bookkeeping write is not part of the request's trace.
        task = loop.create_task(persist(), context=contextvars.Context())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- API keys ------------------------------------------------------------------------

    async def create_key(self, name: str | None, expires_at: str | None, kind: str = "user") -> tuple[KeyRecord, str]:
        key_id, secret = _new_secret()
        record = KeyRecord(key_id, name, kind, digest(secret), now_iso(), expires_at)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (key_id, name, kind, digest, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, kind, record.digest, record.created_at, expires_at),
            )

        await self.store.write(write)
        self.keys[key_id] = record
        log.info("created %s API key %s (%s)", kind, record.prefix, name or "unnamed")
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    def list_keys(self) -> list[KeyRecord]:
        return sorted(self.keys.values(), key=lambda r: (r.created_at, r.key_id), reverse=True)

    def get_key(self, key_id: str) -> KeyRecord:
        ident = key_id[len(KEY_PREFIX) :] if key_id.startswith(KEY_PREFIX) else key_id
        record = self.keys.get(ident)
        if record is None:
            raise not_found("key", key_id=key_id)
        return record

    async def revoke_key(self, key_id: str) -> KeyRecord:
        """Revoke a key (idempotent); its open WebSockets are closed by the listeners."""
        record = self.get_key(key_id)
        if record.revoked_at is None:
            ts = now_iso()
            await self.store.write(
                lambda c: c.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (ts, record.key_id))
            )
            record.revoked_at = ts
            log.info("revoked API key %s", record.prefix)
            self._revoked([record.key_id])
        return record

    def has_user_keys(self) -> bool:
        now = now_iso()
        return any(r.kind == "user" and r.state(now) == "active" for r in self.keys.values())

    async def ensure_local_key(self, path: Path) -> None:
        """Make sure ``path`` holds a valid local-CLI key; mint (and rotate) one if not.

        The key is named after this host and key file (``local-cli@host/<hash>``), and only the
        keys of that name are rotated: several nodes sharing one database each keep their own
        (before clusters there was one, named ``local-cli``: rotated too when alone). A copy
        of a key that a `kill -9` in the middle of its write left is removed."""
        clear_stale_temps(path)
        try:
            self.verify(path.read_text("ascii").strip())
            current = _split(path.read_text("ascii").strip(), KEY_PREFIX)
            if current is not None and self.keys[current[0]].kind == "local":
                os.chmod(path, 0o600)
                return
        except (OSError, UnicodeDecodeError, AuthFailure, KeyError):
            pass
        name = local_key_name(path)
        mine = {name} if self.shared else {name, LOCAL_KEY_NAME}
        for record in list(self.keys.values()):
            if record.kind == "local" and record.revoked_at is None and record.name in mine:
                await self.revoke_key(record.key_id)
        _, key = await self.create_key(name, None, kind="local")
        write_private(path, key + "\n")

    # -- session tokens ------------------------------------------------------------------

    def pending_session_token(self) -> PendingToken:
        """A token to write inside another transaction (session creation), then publish."""
        return PendingToken(self)

    async def mint_session_token(self, session_id: str, max_tokens: int = 0) -> tuple[TokenRecord, str]:
        """Another token for ``session_id``; at most ``max_tokens`` live ones (0: no limit),
        counted in the write's transaction, so concurrent mints cannot overshoot."""
        pending = self.pending_session_token()

        def write(conn: sqlite3.Connection) -> None:
            require_active(conn, session_id)
            if max_tokens > 0:
                (live,) = conn.execute(
                    "SELECT COUNT(*) FROM session_tokens WHERE session_id = ? AND revoked_at IS NULL",
                    (session_id,),
                ).fetchone()
                if live >= max_tokens:
                    raise BusError(
                        ErrorCode.LIMIT_REACHED,
                        f"limit reached: at most {max_tokens} live tokens in a session "
                        "(security.limits.max_tokens_per_session); they end with the session",
                        {"limit": "max_tokens_per_session", "max": max_tokens},
                    )
            pending.write(conn, session_id)

        await self.store.write(write)
        return pending.record, pending.publish()  # type: ignore[return-value]

    @staticmethod
    def end_tokens(conn: sqlite3.Connection, session_id: str, purged: bool) -> None:
        """A session's tokens die with it, in the transaction that ends it (Sessions.ending)."""
        if purged:
            conn.execute("DELETE FROM session_tokens WHERE session_id = ?", (session_id,))
        else:
            conn.execute(
                "UPDATE session_tokens SET revoked_at = ? WHERE session_id = ? AND revoked_at IS NULL",
                (now_iso(), session_id),
            )

    async def session_ended(self, session_id: str, purged: bool) -> None:
        """Session hook: its tokens are dropped from memory (stored revoked by ``end_tokens``)
        and their WebSockets are closed."""
        ended = [t.token_id for t in self.tokens.values() if t.session_id == session_id]
        for token_id in ended:
            del self.tokens[token_id]
        self._revoked(ended)


class PendingToken:
    """A session token being minted: ``write`` runs in a transaction, ``publish`` after it
    committed makes the token valid (memory follows the database, never leads it)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._token_id, self._secret = _new_secret()
        self.record: TokenRecord | None = None

    def write(self, conn: sqlite3.Connection, session_id: str) -> None:
        record = TokenRecord(self._token_id, session_id, digest(self._secret), now_iso())
        conn.execute(
            "INSERT INTO session_tokens (token_id, session_id, digest, created_at) VALUES (?, ?, ?, ?)",
            (record.token_id, session_id, record.digest, record.created_at),
        )
        self.record = record

    def publish(self) -> str:
        assert self.record is not None, "write() has not run"
        self._credentials.tokens[self.record.token_id] = self.record
        return f"{TOKEN_PREFIX}{self._token_id}_{self._secret}"
