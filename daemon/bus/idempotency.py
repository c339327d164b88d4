"""Idempotency-Key: a retried POST returns what the first one created, without doing it again.

The key is looked up and recorded inside the same write transaction that creates the
resource, so two concurrent requests with one key cannot both create (writes are serialised),
and a key is never recorded without what it created. A key is scoped to the request's method
and path; the body is compared by a hash of its canonical JSON, so key order and whitespace
do not matter but any change of value does. The canonical JSON is msgspec's, keys sorted, in
one pass in C: Python's ``json.dumps(sort_keys=True)`` of the decoded body took about ten times
as long (230 ms of the event loop for an 800 KB body, seen: a session token sending such
bodies with keys within its rate limit held the loop from every other client). A key stored
by an older version (its hash made that way) is still recognised (``legacy_hash``); this
version's hashes carry a mark (``VERSION``), so the older hash is made only for such a key,
not for every other body sent with a key of this version (that cost it all over again).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import msgspec
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import ErrorCode, now_iso

# Before the hex digest of this version's hashes: an older one's is the digest alone.
VERSION = "m1:"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str  # "POST /api/sessions/<id>/commands"
    key: str
    body_hash: str
    body: Any = field(default=None, compare=False, repr=False)  # for legacy_hash, rarely

    @classmethod
    def of(cls, scope: str, key: str, body: Any) -> IdempotencyKey:
        """``body``: the decoded request (a protocol Struct, or plain JSON values)."""
        canonical = msgspec.json.encode(body, order="sorted")
        return cls(scope, key, VERSION + hashlib.sha256(canonical).hexdigest(), body)

    def matches(self, stored: str) -> bool:
        """Whether ``stored`` (a key's recorded hash) is this body's: the older hash is made
        only for a key an older version recorded."""
        if stored == self.body_hash:
            return True
        if stored.startswith(VERSION):
            return False
        return stored == self.body_hash.removeprefix(VERSION) or stored == self.legacy_hash()

    def legacy_hash(self) -> str:
        """The hash an older version stored for this body (Python's json, ASCII escapes)."""
        canonical = json.dumps(msgspec.to_builtins(self.body), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def lookup(conn: sqlite3.Connection, idem: IdempotencyKey | None) -> tuple[str, str] | None:
    """(kind, ref) of what the key created before, None if new; IDEMPOTENCY_KEY_REUSED if the
    key was used with another body."""
    if idem is None:
        return None
    row = conn.execute(
        "SELECT body_hash, kind, ref FROM idempotency_keys WHERE scope = ? AND key = ?",
        (idem.scope, idem.key),
    ).fetchone()
    if row is None:
        return None
    if not idem.matches(row[0]):
        raise BusError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was already used with a different request body",
            {"field": "Idempotency-Key", "key": idem.key},
        )
    return row[1], row[2]


def record(conn: sqlite3.Connection, idem: IdempotencyKey | None, kind: str, ref: str, session_id: str | None) -> None:
    if idem is None:
        return
    conn.execute(
        "INSERT INTO idempotency_keys (scope, key, body_hash, kind, ref, session_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (idem.scope, idem.key, idem.body_hash, kind, ref, session_id, now_iso()),
    )
