"""``Client.events()``: follow the event log, resuming from the last seq handed out.

With the daemon's live streams (``llmgine_cli.stream.EventStream``, Server-Sent Events, the
same code as ``llmgine event tail``) events arrive as they are appended. Without them (an
older daemon) a session's log is polled with the ``after`` cursor. Either way the cursor is
the seq of the last event yielded, so a dropped connection or a restarted daemon costs
nothing: the next request starts after it, and no event is yielded twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from llmgine_daemon.protocol import Event

from llmgine_cli.errors import DaemonUnreachable, NotFound, RequestTimeout

if TYPE_CHECKING:
    from llmgine_cli.client import Client

BACKOFF_MAX = 3.0


def follow(
    client: Client, session_id: str | None, *, event_types: Sequence[str] = (),
    since: int | str | None = None, reconnect: bool = True, poll_interval: float = 0.5,
) -> Iterator[Event]:
    try:
        from llmgine_cli.stream import EventStream  # the live stream, when this build has it
    except ImportError:
        EventStream = None  # noqa: N806
    if EventStream is not None:
        stream = EventStream(client, session_id, event_types=event_types, since=since,
                             reconnect=reconnect)
        return (item for item in stream if isinstance(item, Event))
    if session_id is None:
        raise NotFound(404, "NOT_FOUND", "following every session needs the daemon's event streams")
    return _poll(client, session_id, event_types, since, reconnect, poll_interval)


def _poll(
    client: Client, session_id: str, event_types: Sequence[str], since: int | str | None,
    reconnect: bool, poll_interval: float,
) -> Iterator[Event]:
    after: int | None = since if isinstance(since, int) else None
    wanted = [t for t in event_types if t]
    backoff = poll_interval
    while True:
        try:
            if after is None:
                # "Only new events": start after the newest seq the session has now.
                start = 0
                while (head := client.list_events(session_id, after=start, limit=1000)).events:
                    start = head.events[-1].seq
                after = start
            page = client.list_events(session_id, after=after, limit=1000)
        except (DaemonUnreachable, RequestTimeout):
            if not reconnect:
                raise
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            continue
        backoff = poll_interval
        for event in page.events:
            after = event.seq
            if not wanted or any(_matches(event.event_type, w) for w in wanted):
                yield event
        if len(page.events) < 1000:
            time.sleep(poll_interval)


def _matches(event_type: str, pattern: str) -> bool:
    return event_type.startswith(pattern[:-1]) if pattern.endswith("*") else event_type == pattern
