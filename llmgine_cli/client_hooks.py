"""The Client's endpoint methods for scripts and operators: waiting for commands, the queue
across sessions and retries (api/lifecycle.py, api/commands.py), webhooks and schedules
(api/webhooks.py, api/schedules.py): one method per endpoint, as in client.py, which inherits
them (``Client(..., HookEndpoints, ...)``); tests/api/test_endpoints.py holds them to the
endpoint table like the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmgine_daemon.protocol import (
    CommandCreate,
    CommandList,
    CommandRetry,
    CommandWait,
    CommandWaitResult,
    QueueView,
    hooks,
)

from llmgine_cli.client_verbs import LONG_POLL_S, _id


class HookEndpoints:
    _op: Any  # Client._op

    # -- across sessions (api/lifecycle.py) ---------------------------------------------------

    def wait_commands(
        self,
        command_ids: Sequence[str] = (),
        *,
        batch_id: str | None = None,
        any: bool = False,
        status: Sequence[str] | None = None,
        timeout: float = LONG_POLL_S,
    ) -> CommandWaitResult:
        """Hold one request until the commands (of any session) reached ``status`` (default:
        finished), or ``timeout`` seconds passed (``done`` false)."""
        body = CommandWait(
            command_ids=list(command_ids),
            batch_id=batch_id,
            any=any,
            status=list(status) if status else None,
            timeout=timeout,
        )
        return self._op("waitCommands", body=body, wait=timeout)

    def queue(self, *, status: str | None = None, limit: int = 100, session_id: str | None = None) -> QueueView:
        """Unfinished commands of every session (a session token: its own), with positions."""
        query = {"status": status, "limit": limit, "session_id": session_id}
        return self._op("listQueue", query=query)

    def retry_commands(
        self, session_id: str, command_ids: Sequence[str] = (), *, failed: bool = False, dead: bool = False
    ) -> CommandList:
        """Run finished commands again (same ids, attempt + 1): those named, or every failed
        (``failed``) or dead-letter (``dead``) one of the session."""
        body = CommandRetry(command_ids=list(command_ids), failed=failed, dead=dead)
        return self._op("retryCommands", path={"session_id": _id(session_id)}, body=body)

    def create_webhook(
        self,
        url: str,
        *,
        events: Sequence[str] = ("*",),
        session_id: str | None = None,
        secret: str | None = None,
        if_exists: str | None = None,
    ) -> hooks.Webhook:
        """``if_exists``: ``reuse`` returns the webhook of this URL, events and session if there
        is one (without its secret), ``error`` raises CONFLICT; default: another one."""
        body = hooks.WebhookCreate(url, list(events), session_id, secret)
        return self._op("createWebhook", body=body, query={"if_exists": if_exists})

    def list_webhooks(self, session_id: str | None = None) -> hooks.WebhookList:
        return self._op("listWebhooks", query={"session_id": session_id})

    def get_webhook(self, webhook_id: str) -> hooks.Webhook:
        return self._op("getWebhook", path={"webhook_id": webhook_id})

    def delete_webhook(self, webhook_id: str) -> None:
        return self._op("deleteWebhook", path={"webhook_id": webhook_id})

    def webhook_deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> hooks.WebhookDeliveryList:
        query = {"status": status, "limit": limit, "offset": offset}
        return self._op("listWebhookDeliveries", path={"webhook_id": webhook_id}, query=query)

    def create_schedule(
        self, session_id: str, command: CommandCreate, *, if_exists: str | None = None, **when: Any
    ) -> hooks.Schedule:
        """``when``: one of cron=, every=, at=, and timezone=, missed= (hooks.ScheduleCreate).
        ``if_exists``: ``reuse`` returns the session's same schedule (command and timing) if
        there is one, ``error`` raises CONFLICT; default: another one."""
        body = hooks.ScheduleCreate(session_id=_id(session_id), command=command, **when)
        return self._op("createSchedule", body=body, query={"if_exists": if_exists})

    def list_schedules(self, session_id: str | None = None) -> hooks.ScheduleList:
        return self._op("listSchedules", query={"session_id": session_id})

    def get_schedule(self, schedule_id: str) -> hooks.Schedule:
        return self._op("getSchedule", path={"schedule_id": schedule_id})

    def pause_schedule(self, schedule_id: str) -> hooks.Schedule:
        return self._op("pauseSchedule", path={"schedule_id": schedule_id})

    def resume_schedule(self, schedule_id: str) -> hooks.Schedule:
        return self._op("resumeSchedule", path={"schedule_id": schedule_id})

    def delete_schedule(self, schedule_id: str) -> None:
        return self._op("deleteSchedule", path={"schedule_id": schedule_id})
