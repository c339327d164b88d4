"""The document's prose for webhooks and schedules (api/webhooks.py, api/schedules.py), as
api/operations.py describes every other endpoint; api/openapi.py merges HOOK_OPERATIONS into
OPERATIONS."""

from __future__ import annotations

from llmgine_daemon.api.operations import ID, LIMIT, OFFSET, PAGE, Op, Param, _enum

# An addition: what a create does when the same one is there (a setup script run again).
_IF_EXISTS = Param(
    "if_exists",
    _enum("create", "reuse", "error"),
    "when the same one exists (webhook: URL, events and session; schedule: session, command and timing): "
    "`create` another (default), `reuse` it (200; a webhook without its secret) or `error` (409 CONFLICT)",
)

HOOK_OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/api/webhooks"): Op(
        "Register a webhook: matching events are POSTed to the URL, signed",
        "callbacks",
        description="Standard Webhooks signing (`webhook-id`, `webhook-timestamp`, `webhook-signature: "
        "v1,<base64 HMAC-SHA256>`) with the `whsec_` secret, which this answer alone shows (one is generated "
        "when not given). Only hosts `webhooks.allowed_hosts` allows (default: loopback): 403 otherwise. "
        "A session token registers for its own session only. Deliveries are durable and retried with "
        "exponential backoff for `webhooks.retry_for` seconds.",
        params=(_IF_EXISTS,),
    ),
    ("GET", "/api/webhooks"): Op("List webhooks", "callbacks", params=(Param("session_id", ID), *PAGE)),
    ("GET", "/api/webhooks/{webhook_id}"): Op("Get a webhook (never its secret)", "callbacks"),
    ("DELETE", "/api/webhooks/{webhook_id}"): Op("Delete a webhook and its pending deliveries", "callbacks"),
    ("GET", "/api/webhooks/{webhook_id}/deliveries"): Op(
        "List a webhook's deliveries, newest first, with every attempt (status code, error, duration)",
        "callbacks",
        params=(LIMIT, OFFSET, Param("status", _enum("pending", "delivered", "failed"))),
    ),
    ("POST", "/api/schedules"): Op(
        "Create a schedule: a command submitted on a cron expression, every N seconds, or once",
        "callbacks",
        description="Exactly one of `cron` (5 fields, in `timezone`), `every` (seconds, or `90s`, `5m`, `2h`, "
        "`1d`) and `at` (ISO 8601). Each firing submits the command once, with `schedule_id` and "
        "`schedule_due` in its metadata, even across restarts. Firings missed while the daemon was down: "
        "`missed: skip` (default) or `run_once`.",
        params=(_IF_EXISTS,),
    ),
    ("GET", "/api/schedules"): Op(
        "List schedules with their next firing times", "callbacks", params=(Param("session_id", ID), *PAGE)
    ),
    ("GET", "/api/schedules/{schedule_id}"): Op("Get a schedule", "callbacks"),
    ("POST", "/api/schedules/{schedule_id}/pause"): Op("Pause a schedule", "callbacks"),
    ("POST", "/api/schedules/{schedule_id}/resume"): Op(
        "Resume a schedule (from its next firing after now)", "callbacks"
    ),
    ("DELETE", "/api/schedules/{schedule_id}"): Op("Delete a schedule", "callbacks"),
}
