"""Webhooks (signed HTTP callbacks for events) and schedules (commands submitted on a cron,
an interval or once) on the wire.

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from llmgine_daemon.protocol.bus import CommandCreate
from llmgine_daemon.protocol.grammar import (
    EVENT_TYPE_FILTER_PATTERN,
    WEBHOOK_SECRET_PATTERN,
    WEBHOOK_URL_PATTERN,
    Id,
    Timestamp,
)

# -- webhooks ------------------------------------------------------------------------------

MAX_WEBHOOK_URL = 2048
MAX_WEBHOOK_EVENTS = 64
WebhookUrl = Annotated[
    str,
    # No min_length: a short one said "Expected `str` of length >= 8"; the pattern's words (and
    # the host check, bus/webhook_policy.py) say what is wrong.
    msgspec.Meta(pattern=WEBHOOK_URL_PATTERN, max_length=MAX_WEBHOOK_URL, description="an http(s) URL"),
]
EventTypeFilter = Annotated[
    str,
    msgspec.Meta(pattern=EVENT_TYPE_FILTER_PATTERN, description="an event type, a prefix ending in *, or * (every)"),
]
WebhookSecret = Annotated[
    str,
    msgspec.Meta(
        pattern=WEBHOOK_SECRET_PATTERN,
        description="whsec_ and the base64 of 24 to 64 random bytes (Standard Webhooks)",
    ),
]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: WebhookUrl
    events: Annotated[list[EventTypeFilter], msgspec.Meta(min_length=1, max_length=MAX_WEBHOOK_EVENTS)] = msgspec.field(
        default_factory=lambda: ["*"]
    )
    # Only this session's events (a session token may register only for its own session).
    session_id: Id | None = None
    # Generated when not given; returned only by the request that created the webhook.
    secret: WebhookSecret | None = None


class Webhook(msgspec.Struct, kw_only=True):
    webhook_id: str
    url: str
    events: list[str]
    session_id: str | None
    created_at: Timestamp
    pending: int = 0
    delivered: int = 0
    failed: int = 0
    # Only in the answer to POST /api/webhooks.
    secret: str | None = None


class WebhookList(msgspec.Struct):
    webhooks: list[Webhook]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0


class WebhookAttempt(msgspec.Struct):
    attempt: int
    started_at: Timestamp
    status_code: int | None
    error: str | None
    duration_ms: float


DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class WebhookDelivery(msgspec.Struct, kw_only=True):
    delivery_id: str  # the webhook-id header: the same on every attempt
    webhook_id: str
    event_seq: int
    event_type: str
    session_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    finished_at: Timestamp | None = None
    history: list[WebhookAttempt] = []


class WebhookDeliveryList(msgspec.Struct):
    deliveries: list[WebhookDelivery]
    total: int
    limit: int
    offset: int


# -- schedules -----------------------------------------------------------------------------

MissedPolicy = Literal["skip", "run_once"]
ScheduleStatus = Literal["active", "paused", "done"]
SCHEDULE_STATUSES: tuple[str, ...] = get_args(ScheduleStatus)


class ScheduleCreate(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Id
    command: CommandCreate
    # Exactly one of cron ("*/5 * * * *", five or six fields), every (seconds, or "90s",
    # "5m", "2h", "1d") and at (an ISO 8601 time; naive = in ``timezone``).
    cron: str | None = None
    every: float | str | None = None
    at: str | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64, description="an IANA zone, e.g. Europe/Berlin")] = "UTC"
    missed: MissedPolicy = "skip"


class Schedule(msgspec.Struct, kw_only=True):
    schedule_id: str
    session_id: str
    kind: str  # cron | every | at
    spec: str
    timezone: str
    missed: str
    command: dict[str, Any]
    status: ScheduleStatus
    next_due: Timestamp | None
    created_at: Timestamp
    fire_count: int = 0
    last_fired_at: Timestamp | None = None
    last_command_id: str | None = None
    last_error: str | None = None
    # The next few firing times (ISO UTC), from next_due on.
    upcoming: list[Timestamp] = []


class ScheduleList(msgspec.Struct):
    schedules: list[Schedule]
    total: int
    # The page: ?limit= (1-1000; absent: all of them) and ?offset= (api/util.py paged).
    limit: int | None = None
    offset: int = 0
