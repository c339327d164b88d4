"""The endpoint table's rows for webhooks and schedules (api/webhooks.py, api/schedules.py);
endpoints.py appends them to ENDPOINTS. Kept apart so the table's module stays readable.

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

from llmgine_daemon.protocol.base import ErrorCode as E
from llmgine_daemon.protocol.endpoint import Endpoint
from llmgine_daemon.protocol.hooks import (
    Schedule,
    ScheduleCreate,
    ScheduleList,
    Webhook,
    WebhookCreate,
    WebhookDeliveryList,
    WebhookList,
)

_NF = (E.NOT_FOUND,)
HOOK_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "createWebhook",
        "POST",
        "/api/webhooks",
        {201: Webhook, 200: Webhook},
        WebhookCreate,
        errors=(E.SESSION_NOT_FOUND, E.SESSION_CLOSED, E.LIMIT_REACHED, E.CONFLICT),
        client="create_webhook",
    ),
    Endpoint("listWebhooks", "GET", "/api/webhooks", {200: WebhookList}, client="list_webhooks"),
    Endpoint("getWebhook", "GET", "/api/webhooks/{webhook_id}", {200: Webhook}, errors=_NF, client="get_webhook"),
    Endpoint("deleteWebhook", "DELETE", "/api/webhooks/{webhook_id}", {204: None}, errors=_NF, client="delete_webhook"),
    Endpoint(
        "listWebhookDeliveries",
        "GET",
        "/api/webhooks/{webhook_id}/deliveries",
        {200: WebhookDeliveryList},
        errors=_NF,
        client="webhook_deliveries",
    ),
    Endpoint(
        "createSchedule",
        "POST",
        "/api/schedules",
        {201: Schedule, 200: Schedule},
        ScheduleCreate,
        errors=(E.SESSION_NOT_FOUND, E.SESSION_CLOSED, E.HANDLER_NOT_FOUND, E.LIMIT_REACHED, E.CONFLICT),
        client="create_schedule",
    ),
    Endpoint("listSchedules", "GET", "/api/schedules", {200: ScheduleList}, client="list_schedules"),
    Endpoint("getSchedule", "GET", "/api/schedules/{schedule_id}", {200: Schedule}, errors=_NF, client="get_schedule"),
    Endpoint(
        "pauseSchedule",
        "POST",
        "/api/schedules/{schedule_id}/pause",
        {200: Schedule},
        errors=(E.NOT_FOUND, E.CONFLICT),
        client="pause_schedule",
    ),
    Endpoint(
        "resumeSchedule",
        "POST",
        "/api/schedules/{schedule_id}/resume",
        {200: Schedule},
        errors=(E.NOT_FOUND, E.CONFLICT),
        client="resume_schedule",
    ),
    Endpoint(
        "deleteSchedule", "DELETE", "/api/schedules/{schedule_id}", {204: None}, errors=_NF, client="delete_schedule"
    ),
)
