"""The document's prose for the two event-stream endpoints (api/streams.py: WebSocket or SSE on
one path), as api/operations.py describes every other endpoint; api/openapi.py merges
STREAM_OPERATIONS into OPERATIONS."""

from __future__ import annotations

from llmgine_daemon.api.operations import Op, Param

STREAM_DESCRIPTION = """\
Live events, in `seq` order, as **WebSocket** (send `Upgrade: websocket`; subprotocol
`llmgine.events.v1`, or the older `llmgine`; browsers pass their credential as a second one,
`llmgine.bearer.<TOKEN>`) or as **Server-Sent
Events** (a plain GET with `Accept: text/event-stream`; an EventSource, which cannot send
headers, passes its credential as `?token=`). Query: `event_type` (repeatable or
comma-separated, `Prefix*`), `source`, `since` (a seq, an ISO time or `now`). A client that
reconnects with the last `seq` it saw (`since=SEQ`, or SSE's `Last-Event-ID`) misses nothing
and sees nothing twice. Messages: `hello` (the start point), `event` (an Event), `live`
(caught up), `lagging` (this subscriber fell behind; it catches up from the store), `end`
(the session ended). See docs/streams.md."""

STREAM_PARAMS = (
    Param("event_type", {"type": "string"}, "event types, comma-separated or repeated; `Prefix*`"),
    Param("source", {"type": "string"}, "event sources, comma-separated or repeated"),
    Param(
        "since",
        {"type": "string", "pattern": r"^(now|[0-9]+|\d{4}-\d\d-\d\d.*)$"},
        "a seq (resume after it), an ISO 8601 time, or `now` (default)",
    ),
    Param(
        "Last-Event-ID", {"type": "string", "pattern": r"^[0-9]+$"}, "SSE resume: the last seq seen", location="header"
    ),
    Param("lastEventId", {"type": "string", "pattern": r"^[0-9]+$"}, "Last-Event-ID in the query (SSE polyfills)"),
    Param("token", {"type": "string"}, "a page's session token, as an EventSource must pass it (docs/security.md)"),
)


def _stream(summary: str) -> Op:
    """One of the two stream operations: the same parameters, prose and content types."""
    return Op(
        summary,
        "streams",
        params=STREAM_PARAMS,
        description=STREAM_DESCRIPTION,
        content_type="text/event-stream",
        stream=True,
    )


STREAM_OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/api/sessions/{session_id}/events/stream"): _stream("Stream a session's events (WebSocket or SSE)"),
    ("GET", "/api/events/stream"): _stream("Stream every session's events (WebSocket or SSE)"),
}
