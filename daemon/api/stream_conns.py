"""The connections of the open event streams (api/streams.py), watched by one sweep.

Every ``GONE_CHECK`` one task looks at the connections of all open streams (WebSocket and SSE),
only while there are any; an idle stream itself sleeps until an event, its heartbeat or its
client's departure. The sweep notices:

- **an SSE client that went away.** aiohttp does not cancel a handler whose client
  disconnected (a WebSocket's reader sees it): the stream's ``gone`` future is resolved, so it
  frees its slot of max_websockets within ``GONE_CHECK``, not at its next heartbeat's failed
  write. One sweep, not a timer per stream: 1,000 idle streams cost one wake-up.
- **a client that stopped reading.** A stream's sender waits in a write until the client takes
  the bytes before them; when the connection's write buffer has not shrunk for ``STALL``
  seconds while the sender waits, the connection is aborted and the stream ends (the client
  resumes with ``since``/``Last-Event-ID`` when it reads again). Without it such a stream was
  never dropped: aiohttp's heartbeat "closes" a WebSocket whose pong is missing by flushing
  first, which a peer that reads nothing never lets finish, so the stream held its slot, its
  backlog (megabytes) and the daemon's shutdown for as long as the peer kept the connection.
  A client that reads slowly but keeps reading is not dropped: the buffer shrinks.

On shutdown, ``abort_all`` drops the connections of the streams still open after their grace.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import struct
from collections.abc import Awaitable
from typing import TypeVar

from llmgine_daemon.aio import cancel_and_wait

log = logging.getLogger("llmgine.streams")

T = TypeVar("T")

# How often the open streams' connections are looked at.
GONE_CHECK = 0.5
# A sender waiting this long on a client that takes none of the bytes before it ends the stream
# (the WebSocket heartbeat's interval: docs/streams.md says such a client is disconnected).
STALL = 15.0


class StreamConnection:
    """One stream's connection: ``gone`` resolves when its client went away (SSE); ``write``
    wraps every write of its sender so the sweep can tell a stalled client."""

    __slots__ = ("transport", "gone", "waiting_since", "buffered")

    def __init__(self, transport: asyncio.Transport | None, gone: asyncio.Future[None]) -> None:
        self.transport = transport
        self.gone = gone
        # Set while the sender waits in a write: since when its buffer last shrank, and its size.
        self.waiting_since: float | None = None
        self.buffered = 0

    async def write(self, aw: Awaitable[T]) -> T:
        """Await a write (one that may wait for the client to read) as one the sweep watches."""
        self.waiting_since = asyncio.get_running_loop().time()
        self.buffered = self._buffer_size()
        try:
            return await aw
        finally:
            self.waiting_since = None

    def abort(self) -> None:
        """Drop the connection with a reset: a plain close leaves what the client did not read
        in the kernel's send buffer (megabytes) until the kernel gives up on the peer."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def _buffer_size(self) -> int:
        try:
            return self.transport.get_write_buffer_size() if self.transport is not None else 0
        except (AttributeError, RuntimeError):
            return 0

    def _stalled(self, now: float) -> bool:
        if self.waiting_since is None:
            return False
        size = self._buffer_size()
        if size < self.buffered:  # the client read some: progress
            self.waiting_since, self.buffered = now, size
            return False
        return now - self.waiting_since >= STALL

    def _departed(self) -> bool:
        return self.transport is None or self.transport.is_closing()


class StreamConnections:
    """The open streams' connections, and the sweep that watches them."""

    def __init__(self) -> None:
        self._open: set[StreamConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, transport: asyncio.Transport | None) -> StreamConnection:
        conn = StreamConnection(transport, asyncio.get_running_loop().create_future())
        self._open.add(conn)
        if self._sweeper is None:
            # Not in the context of the request that happens to start it: its log lines would
            # carry that request's trace and id, whichever stream they are about.
            self._sweeper = asyncio.create_task(
                self._sweep(), name="llmgine-stream-connections", context=contextvars.Context()
            )
        return conn

    def forget(self, conn: StreamConnection) -> None:
        self._open.discard(conn)

    def abort_all(self) -> int:
        """Drop every stream connection still open (shutdown, after the grace); how many."""
        conns = list(self._open)
        for conn in conns:
            conn.abort()
        return len(conns)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._open:
                await asyncio.sleep(GONE_CHECK)
                now = loop.time()
                for conn in list(self._open):
                    if conn._stalled(now):
                        log.warning("dropped an event stream whose client read nothing for %gs", STALL)
                        conn.abort()
                    if conn._departed() and not conn.gone.done():
                        conn.gone.set_result(None)
        finally:
            self._sweeper = None

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
