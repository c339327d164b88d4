"""The event streams' messages (docs/streams.md): one tagged union each way.

Every message is a JSON object whose ``type`` names it. The daemon sends ``ServerFrame``s
(WebSocket text frames; over Server-Sent Events the same JSON, as ``event: stream.<type>``,
except events, which are SSE messages of their own: ``id: <seq>``, ``event: <event_type>``,
the Event as data); a WebSocket client sends ``ClientFrame``s.

    hello       where the stream starts (and the filter)        first message
    event       one Event                                       WebSocket only (see above)
    live        caught up with the log: what follows is live
    lagging     this subscriber fell behind; it catches up from the store, nothing is lost
    subscribed  the answer to ``subscribe``: the new filter, applied after ``after_seq``
    pong        the answer to ``ping``
    error       a client message was refused (the stream goes on)
    end         the stream is over (SSE; a WebSocket closes with the code instead)

Decode with ``msgspec.json.decode(data, type=ServerFrame)``; ``frame.type`` is the tag.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec
from llmgine_daemon.protocol.base import ErrorBody
from llmgine_daemon.protocol.bus import Event


class Frame(msgspec.Struct, tag_field="type", kw_only=True):
    """A stream message; its ``type`` is the class's tag."""

    @property
    def type(self) -> str:
        return self.__struct_config__.tag  # type: ignore[return-value]


# -- from the daemon ------------------------------------------------------------------------


class Hello(Frame, tag="hello"):
    last_seq: int  # the newest seq in the log
    since: int  # the stream starts after this seq (resume with it)
    replay: bool  # older events come first, read from the store
    session_id: str | None
    event_types: list[str]
    sources: list[str]
    heartbeat: float  # seconds between pings (WebSocket) or comments (SSE)


class EventFrame(Frame, tag="event"):
    event: Event


class Live(Frame, tag="live"):
    seq: int


class Lagging(Frame, tag="lagging"):
    after_seq: int
    head_seq: int


class Subscribed(Frame, tag="subscribed"):
    session_id: str | None
    event_types: list[str]
    sources: list[str]
    after_seq: int


class Pong(Frame, tag="pong"):
    pass


class StreamError(Frame, tag="error"):
    error: ErrorBody


class End(Frame, tag="end"):
    """``code``: the WebSocket close code, 1000 (nothing more will come), 1001 (the daemon
    is going away: reconnect and resume) or 1008 (the key that opened it was revoked)."""

    code: int
    reason: str


ServerFrame: TypeAlias = Hello | EventFrame | Live | Lagging | Subscribed | Pong | StreamError | End

# -- from a WebSocket client -----------------------------------------------------------------


class Subscribe(Frame, tag="subscribe", forbid_unknown_fields=True):
    """Replace the filter (None keeps that part as it is)."""

    event_types: list[str] | None = None
    sources: list[str] | None = None


class Ping(Frame, tag="ping", forbid_unknown_fields=True):
    pass


ClientFrame: TypeAlias = Subscribe | Ping


def stream_error(code: str, message: str, details: dict[str, Any] | None = None) -> StreamError:
    return StreamError(error=ErrorBody(code=code, message=message, details=details or {}))
