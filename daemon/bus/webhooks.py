"""Webhooks: register an http(s) URL for some event types (of one session, or of all), and
every matching event is POSTed to it, signed (Standard Webhooks), retried with exponential
backoff until ``webhooks.retry_for`` has passed, each attempt recorded.

    create / list / get / delete      this module (the ``webhooks`` table)
    deliveries                        the outbox rows and their attempts, newest first
    the outbox and the sender         bus/webhook_outbox.py (background tasks)
    where a webhook may call, signing bus/webhook_policy.py

Durability: deliveries are derived from the event log by a cursor that moves in the same
transaction that writes the outbox rows (webhook_outbox.py), so an event committed before a
crash is delivered after it; the bus's own writes never wait for a webhook.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.scoping import check_limits, missing, require_scope, visible
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.bus.webhook_outbox import Outbox, Sender
from llmgine_daemon.bus.webhook_policy import SESSION_TOKEN_HOSTS, HostPolicy, check_secret, new_secret
from llmgine_daemon.protocol import (
    ErrorCode,
    Webhook,
    WebhookAttempt,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookList,
    now_iso,
)

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

WEBHOOK_COLUMNS = "webhook_id, url, events, session_id, created_at"
_COUNTS = "(SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.webhook_id AND d.status = ?)"
DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, event_seq, event_type, session_id, status, attempts, next_attempt_at,"
    " created_at, finished_at"
)


@dataclass(frozen=True)
class WebhookConfig:
    """The ``webhooks.*`` settings (app.py builds it)."""

    policy: HostPolicy = field(default_factory=lambda: HostPolicy.parse(["127.0.0.0/8", "::1", "localhost"]))
    # A session token's webhooks: webhooks.session_token_allowed_hosts (none by default)
    session_token_policy: HostPolicy = field(default_factory=lambda: HostPolicy.parse([], SESSION_TOKEN_HOSTS))
    timeout: float = 10.0
    retry_for: float = 86400.0
    retry_base: float = 1.0
    retry_cap: float = 600.0
    max_per_session: int = 20
    max_total: int = 200
    keep_for: float = 7 * 86400.0  # seconds an ended delivery (and its attempts) stays listed

    def policy_for(self, session_token: bool) -> HostPolicy:
        """Where a webhook may call: a session token's, ``session_token_policy`` (refused at
        once, naming the setting, while it lists nothing)."""
        return self.session_token_policy.for_session_token("webhooks") if session_token else self.policy


def _row_to_webhook(row: tuple[Any, ...]) -> Webhook:
    webhook = Webhook(webhook_id=row[0], url=row[1], events=loads(row[2]), session_id=row[3], created_at=row[4])
    if len(row) > 5:
        webhook.pending, webhook.delivered, webhook.failed = row[5], row[6], row[7]
    return webhook


def _fetch(conn: sqlite3.Connection, webhook_id: str, scope: str | None) -> Webhook:
    row = conn.execute(
        f"SELECT {WEBHOOK_COLUMNS}, {_COUNTS}, {_COUNTS}, {_COUNTS} FROM webhooks w WHERE webhook_id = ?",
        ("pending", "delivered", "failed", webhook_id),
    ).fetchone()
    if row is None or not visible(scope, row[3]):
        raise missing("webhook", webhook_id)
    return _row_to_webhook(row)


def _delete_rows(conn: sqlite3.Connection, webhook_ids: list[str]) -> None:
    for webhook_id in webhook_ids:
        conn.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN"
            " (SELECT delivery_id FROM webhook_deliveries WHERE webhook_id = ?)",
            (webhook_id,),
        )
        conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
        conn.execute("DELETE FROM webhooks WHERE webhook_id = ?", (webhook_id,))


class Webhooks:
    def __init__(self, bus: Bus, config: WebhookConfig | None = None) -> None:
        self.bus = bus
        self.store = bus.store
        self.config = config or WebhookConfig()
        self.outbox = Outbox(bus, self.config)
        # Webhooks a purge's transaction removed, per session: told to the outbox after it.
        self._purged: dict[str, int] = {}

    async def create(self, body: WebhookCreate, scope: str | None, if_exists: str = "create") -> tuple[Webhook, bool]:
        """Register a webhook; the answer carries its secret (the only time it is shown). With
        whether it was created: ``if_exists`` when a webhook of the same URL, events and session
        is there: ``create`` another, ``reuse`` it (returned without its secret, nothing
        written) or ``error`` (CONFLICT); decided in the write's transaction."""
        require_scope(scope, body.session_id, "webhooks")
        by_token = scope is not None  # a session token's (api/scoped.py scope_of)
        self.config.policy_for(by_token).check_url(body.url)
        if body.secret is not None:
            check_secret(body.secret)
        secret = body.secret or new_secret()
        events = list(dict.fromkeys(body.events))
        ts = now_iso()
        webhook = Webhook(
            webhook_id=new_id(), url=body.url, events=events, session_id=body.session_id, created_at=ts, secret=secret
        )
        cfg = self.config

        def write(conn: sqlite3.Connection) -> str | None:
            if body.session_id is not None:
                # An ended session publishes nothing more: a webhook for it would never send.
                require_active(conn, body.session_id)
            if if_exists != "create":
                twin = conn.execute(
                    "SELECT webhook_id, secret FROM webhooks WHERE url = ? AND events = ? AND session_id IS ?"
                    " ORDER BY created_at LIMIT 1",
                    (webhook.url, dumps(events), body.session_id),
                ).fetchone()
                # A secret given that is not the one there: reusing would sign with another.
                if twin is not None and if_exists == "reuse" and body.secret in (None, twin[1]):
                    return str(twin[0])
                if twin is not None and if_exists == "reuse":
                    raise BusError(
                        ErrorCode.CONFLICT,
                        f"a webhook for this URL, events and session exists ({twin[0]}) with another secret: "
                        "delete it to register it with this one",
                        {"webhook_id": twin[0]},
                    )
                if twin is not None:
                    raise BusError(
                        ErrorCode.CONFLICT,
                        f"a webhook for this URL, events and session exists ({twin[0]})",
                        {"webhook_id": twin[0]},
                    )
            check_limits(
                conn,
                "webhooks",
                body.session_id,
                ("webhooks.max_per_session", cfg.max_per_session),
                ("webhooks.max_total", cfg.max_total),
            )
            top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            conn.execute(
                "INSERT INTO webhooks (webhook_id, url, events, session_id, secret, after_seq, created_at,"
                " session_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (webhook.webhook_id, webhook.url, dumps(events), body.session_id, secret, top, ts, int(by_token)),
            )
            return None

        twin = await self.store.write(write)
        if twin is not None:
            return await self.get(twin, scope), False
        self.outbox.changed(+1)
        return webhook, True

    async def list(self, scope: str | None, session_id: str | None = None) -> WebhookList:
        where, params = "", ["pending", "delivered", "failed"]
        wanted = scope if scope is not None else session_id
        if wanted is not None:
            where, params = " WHERE session_id = ?", [*params, wanted]

        def read(conn: sqlite3.Connection) -> WebhookList:
            rows = conn.execute(
                f"SELECT {WEBHOOK_COLUMNS}, {_COUNTS}, {_COUNTS}, {_COUNTS} FROM webhooks w{where}"
                " ORDER BY created_at, webhook_id",
                params,
            ).fetchall()
            return WebhookList([_row_to_webhook(r) for r in rows], len(rows))

        return await self.store.read(read)

    async def get(self, webhook_id: str, scope: str | None) -> Webhook:
        return await self.store.read(lambda conn: _fetch(conn, webhook_id, scope))

    async def delete(self, webhook_id: str, scope: str | None) -> None:
        """Delete a webhook with its outbox rows and their attempts (nothing more is sent)."""

        def write(conn: sqlite3.Connection) -> None:
            _fetch(conn, webhook_id, scope)
            _delete_rows(conn, [webhook_id])

        await self.store.write(write)
        self.outbox.changed(-1)

    async def deliveries(
        self, webhook_id: str, scope: str | None, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> WebhookDeliveryList:
        """A webhook's deliveries, newest first, each with its attempts."""

        def read(conn: sqlite3.Connection) -> WebhookDeliveryList:
            _fetch(conn, webhook_id, scope)
            where, params = "webhook_id = ?", [webhook_id]
            if status:
                where, params = where + " AND status = ?", [*params, status]
            total = conn.execute(f"SELECT COUNT(*) FROM webhook_deliveries WHERE {where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {where}"
                " ORDER BY event_seq DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            out = []
            for r in rows:
                attempts = conn.execute(
                    "SELECT attempt, started_at, status_code, error, duration_ms FROM webhook_attempts"
                    " WHERE delivery_id = ? ORDER BY attempt",
                    (r[0],),
                ).fetchall()
                out.append(
                    WebhookDelivery(
                        delivery_id=r[0],
                        webhook_id=r[1],
                        event_seq=r[2],
                        event_type=r[3],
                        session_id=r[4],
                        status=r[5],
                        attempts=r[6],
                        next_attempt_at=r[7] if r[5] == "pending" else None,
                        created_at=r[8],
                        finished_at=r[9],
                        history=[WebhookAttempt(*a) for a in attempts],
                    )
                )
            return WebhookDeliveryList(out, total, limit, offset)

        return await self.store.read(read)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, sender: Sender | None) -> None:
        """Start the outbox (and, given a sender, the deliveries): app.py hands the HTTP
        client down, the bus never imports one."""
        await self.outbox.start(sender)

    async def stop(self) -> None:
        await self.outbox.stop()

    def end_with_session(self, conn: sqlite3.Connection, session_id: str, purged: bool) -> None:
        """A purged session's webhooks go with it, in the purge's transaction (Sessions.ending;
        an ended one's stay: its last events, SessionEnded included, are still delivered)."""
        if purged:
            ids = [r[0] for r in conn.execute("SELECT webhook_id FROM webhooks WHERE session_id = ?", (session_id,))]
            _delete_rows(conn, ids)
            self._purged[session_id] = len(ids)

    async def on_session_end(self, session_id: str, purged: bool) -> None:
        removed = self._purged.pop(session_id, 0)
        if removed:
            self.outbox.changed(-removed)
