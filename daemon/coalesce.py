"""Responses written together: what a connection writes during one turn of the event loop goes
to its socket at the end of that turn, with every other connection's (server.py's listeners).

Why: on loopback, and even more in a virtual machine, most of what a ``send()`` of a small
response costs is waking the client, which went to sleep after its last answer. Under load
the loop answers many requests in one turn (reads of every ready socket, then their handlers);
sending each answer the moment it is made wakes a client for each. Held to the end of the turn
and sent back to back, the first send wakes the client and the rest find it awake. Measured
with wrk against the same daemon (bench/README.md, "Writes held to the end of the turn"):
GET /api/sessions/{id} went from 111-132 to 91-92 us of CPU per request.

Where: the TCP listeners only. Over the Unix socket (the CLI, local scripts) a closed loop of
32 clients running commands got 10-15% fewer answers per second with writes held
(bench/pg_cluster.py's SQLite baseline, alternated: 1,871-1,972 against 2,025-2,392/s): there a
send costs less and the turn's wait is paid in latency by every client.

What holds:
- A connection's bytes keep their order: writes held in a turn are joined in order, and
  nothing of a later turn can pass them (the flush runs first in the next turn, before the
  callbacks of what that turn's poll found).
- Nothing waits longer than the turn it was written in: one callback (``call_soon``) per turn
  flushes every connection that wrote.
- ``close()`` and ``write_eof()`` flush first; ``abort()`` drops what is held, as it drops the
  transport's own buffer. A ``sendfile`` (not used by the daemon) flushes before it touches
  the socket (``_make_empty_waiter``). ``get_write_buffer_size()`` is the transport's own:
  asyncio decides on it whether to resume a paused writer, and held bytes are not in its
  buffer (counting them could leave a writer paused with nothing left to send).
- A flush that fails for one connection (its socket broke) is logged and the others are
  still sent.
- Memory and flow control: a connection holds at most MAX_HELD bytes; past that its writes go
  out at once, into the transport's own buffer, whose high-water mark pauses the writer as
  before (a client that does not read cannot make the daemon hold more than without this).

How: the server's protocol factory is wrapped (``coalesced``) so that each new transport's
write methods are replaced on that instance, before aiohttp's protocol sees it. The loop, other
transports (the daemon's HTTP clients, the sandbox's pipes) and aiohttp itself are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("llmgine.server")

_HELD = "_llmgine_held"
# A connection holds at most this much: more is sent at once, so a large or streamed answer
# (or a client pipelining many requests) meets the transport's own buffer limits and the
# writer's drain() as before (asyncio's default high-water mark is 64 KiB).
MAX_HELD = 64 * 1024


class _Held:
    """What one connection wrote this turn."""

    __slots__ = ("chunks", "size")

    def __init__(self, data: bytes) -> None:
        self.chunks = [data]
        self.size = len(data)


class Flusher:
    """The connections of a listener (one loop) that wrote this turn, and the one callback
    that sends it all."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[Any] = []
        self.scheduled = False

    def hold(self, transport: Any, data: bytes) -> None:
        held: _Held | None = transport.__dict__.get(_HELD)
        if held is not None:
            held.chunks.append(data)
            held.size += len(data)
            if held.size >= MAX_HELD:
                release(transport)  # a large answer goes now, under the transport's flow control
            return
        if len(data) >= MAX_HELD:
            type(transport).write(transport, data)
            return
        setattr(transport, _HELD, _Held(data))
        self.dirty.append(transport)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for transport in dirty:
            try:
                release(transport)
            except Exception:  # one connection's error is its own: the others are still sent
                log.warning("could not send a held answer", exc_info=True)


def release(transport: Any) -> None:
    """Send what ``transport`` holds now (the class's own write: one call, joined)."""
    held: _Held | None = transport.__dict__.pop(_HELD, None)
    if held is not None:
        chunks = held.chunks
        type(transport).write(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))


def hold_writes(transport: asyncio.BaseTransport, flusher: Flusher) -> None:
    """Make ``transport`` hold its writes to the end of the turn, when ``flusher`` sends them
    (see the module docstring)."""
    cls = type(transport)
    if not hasattr(transport, "__dict__") or not hasattr(cls, "write"):
        return  # not a socket transport we know how to hold for: left as it is

    def write(data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if transport.is_closing():
            cls.write(transport, data)  # the transport's own answer (ignored, or an error)
            return
        flusher.hold(transport, bytes(data))

    def writelines(list_of_data: Any) -> None:
        write(b"".join(list_of_data))

    def flushing(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                release(transport)
            except Exception:  # its socket broke: the method still runs (close, above all)
                log.warning("could not send a held answer", exc_info=True)
            return method(transport, *args)

        return call

    def abort() -> None:
        transport.__dict__.pop(_HELD, None)
        cls.abort(transport)

    transport.write = write  # type: ignore[method-assign]
    transport.writelines = writelines  # type: ignore[method-assign]
    transport.close = flushing(cls.close)  # type: ignore[method-assign]
    transport.write_eof = flushing(cls.write_eof)  # type: ignore[attr-defined]
    transport.abort = abort  # type: ignore[attr-defined]
    if hasattr(cls, "_make_empty_waiter"):  # loop.sendfile's first step
        transport._make_empty_waiter = flushing(cls._make_empty_waiter)  # type: ignore[attr-defined]


class _Holding(asyncio.Protocol):
    """The server's protocol, given transports that hold their writes."""

    __slots__ = ("inner", "flusher")

    def __init__(self, inner: asyncio.Protocol, flusher: Flusher) -> None:
        self.inner, self.flusher = inner, flusher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        hold_writes(transport, self.flusher)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def coalesced(factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
    """A protocol factory whose connections hold their writes to the end of the turn (made on
    the loop that will serve them)."""
    flusher = Flusher(asyncio.get_running_loop())
    return lambda: _Holding(factory(), flusher)


class CoalescingSite(web.SockSite):
    """``web.SockSite`` whose connections hold their writes to the end of the turn."""

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What serves each connection: aiohttp's server (a subclass may wrap it)."""
        server = self._runner.server
        assert server is not None
        return server

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            coalesced(self.protocol_factory()), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )
