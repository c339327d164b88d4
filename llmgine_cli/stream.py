"""Live event stream: follows the daemon's event log, reconnects and resumes from the last seq.

Transport: Server-Sent Events over ``http.client`` (the same Unix/TCP connection classes the
Client uses), not WebSocket. The stream is one-way, so SSE gives everything a tail needs with
the standard library alone: a plain GET, line framing, and a resume protocol built in
(``Last-Event-ID``). A WebSocket client would need RFC 6455 framing, masking and ping/pong
handling to receive the same events, and importing aiohttp for it costs more than a whole
request/response command.

    stream = EventStream(client, session_id=None, event_types=("Command*",), since=0)
    for item in stream:          # protocol.Event, or a stream frame (Hello, Live, Lagging, End, ...)
        ...

Resume: the cursor is the seq of the last event handed out (or the start point the server
announced in its hello). Every reconnect sends it as ``Last-Event-ID``, so across a daemon
restart nothing is missed and nothing is repeated. The iteration ends when the server ends
the stream for good (the session ended); a daemon that goes away is reconnected to with
backoff, or, with ``reconnect=False``, raises DaemonUnreachable, as does a first connection
that fails (no daemon to resume from).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence

import msgspec
from llmgine_daemon.protocol import Event
from llmgine_daemon.protocol.streams import End, Frame, Hello, ServerFrame

from llmgine_cli.client import Client, DaemonUnreachable
from llmgine_cli.transport import error_from_response

# The server sends a heartbeat every 15 s; silence for this long means a dead connection.
READ_TIMEOUT = 40.0
BACKOFF_START = 0.1
BACKOFF_MAX = 3.0
CLOSE_NORMAL = 1000

_decode_event = msgspec.json.Decoder(Event).decode
# The control messages are protocol/streams.py's frames, the daemon's own definition.
_decode_frame = msgspec.json.Decoder(ServerFrame).decode


class _Disconnected(Exception):
    """The connection ended without the server saying the stream is over."""


class EventStream:
    def __init__(
        self,
        client: Client,
        session_id: str | None = None,
        *,
        event_types: Sequence[str] = (),
        sources: Sequence[str] = (),
        since: int | str | None = None,
        reconnect: bool = True,
        on_status: Callable[[str], None] | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.event_types = tuple(event_types)
        self.sources = tuple(sources)
        self.since = since
        self.reconnect = reconnect
        self.on_status = on_status or (lambda _text: None)
        self.read_timeout = read_timeout
        # The seq of the last event handed out, or the server's announced start point.
        self.cursor: int | None = since if isinstance(since, int) else None
        self.reconnects = 0
        self.stopped = False
        self._conn: http.client.HTTPConnection | None = None

    @property
    def path(self) -> str:
        base = (
            f"/api/sessions/{urllib.parse.quote(self.session_id, safe='')}/events/stream"
            if self.session_id
            else "/api/events/stream"
        )
        query: list[tuple[str, str]] = [("event_type", t) for t in self.event_types]
        query += [("source", s) for s in self.sources]
        if self.cursor is None and self.since is not None:
            query.append(("since", str(self.since)))
        return f"{base}?{urllib.parse.urlencode(query)}" if query else base

    def __iter__(self) -> Iterator[Event | Frame]:
        backoff = BACKOFF_START
        lost: str | None = None
        first = True
        while not self.stopped:
            try:
                resp = self._open(first)
            except DaemonUnreachable as exc:
                # Never connected: the daemon is not running (exit 3, as for every command),
                # not gone for a restart; reconnecting is for a stream that was there.
                if not self.reconnect or first:
                    raise
                if lost is None:
                    lost = str(exc)
                    self.on_status(f"{exc}; reconnecting ...")
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            first = False
            if lost is not None:
                self.reconnects += 1
                self.on_status(f"reconnected to {self.client.url}; resuming after seq {self.cursor}")
                lost = None
            backoff = BACKOFF_START
            try:
                for item in self._frames(resp):
                    if isinstance(item, End):
                        if item.code == CLOSE_NORMAL:
                            yield item
                            return
                        raise _Disconnected(item.reason or "stream ended")
                    yield item
                raise _Disconnected("the daemon closed the connection")
            except (_Disconnected, OSError, http.client.HTTPException) as exc:
                if self.stopped:
                    return
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, (TimeoutError, socket.timeout)):
                    reason = f"no data for {self.read_timeout:g}s"
                if not self.reconnect:
                    raise DaemonUnreachable(
                        f"lost the stream from {self.client.url}: {reason}",
                        self.client.url,
                        before_send=False,
                    ) from None
                lost = reason
                self.on_status(
                    f"lost the stream from {self.client.url} ({reason}); "
                    f"reconnecting to resume after seq {self.cursor} ..."
                )
            finally:
                self.close()

    def stop(self) -> None:
        """End the iteration from another thread (the reader of a tail's output went away):
        the connection is shut down under the read waiting on it, and nothing reconnects."""
        self.stopped = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- plumbing --------------------------------------------------------------------------

    def _open(self, first: bool) -> http.client.HTTPResponse:
        # The client's own headers: its credential is the one every other request sends
        # (the local CLI key too, for our own TCP daemon).
        headers = self.client._headers(None, {"Accept": "text/event-stream"})
        if self.cursor is not None:
            headers["Last-Event-ID"] = str(self.cursor)
        url = self.client.url
        conn = self.client._connection(self.read_timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            unreachable = DaemonUnreachable(f"cannot connect to {url}: {exc.strerror or exc}", url, before_send=True)
            hook = self.client.on_unreachable
            if not first or hook is None:
                raise unreachable from None
            self.client.on_unreachable = None  # auto-start once, on the first connection only
            hook(unreachable)
            return self._open(first=False)
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DaemonUnreachable(f"lost the connection to {url}: {exc}", url, before_send=False) from None
        if resp.status != 200:
            body = resp.read()
            conn.close()
            error = error_from_response(resp.status, resp.reason, body)
            if error.code == "SHUTTING_DOWN":  # restarting: come back in a moment
                raise DaemonUnreachable(f"{url} is shutting down", url, before_send=True)
            raise error
        self._conn = conn
        return resp

    def _frames(self, resp: http.client.HTTPResponse) -> Iterator[Event | Frame]:
        fields: dict[str, str] = {}
        data: list[str] = []
        while not self.stopped:  # stop() from another thread: at the latest, the next heartbeat
            raw = resp.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line:
                if line.startswith(":"):
                    continue  # heartbeat comment
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
                continue
            if not data:
                fields = {}
                continue
            item = self._item(fields.get("event", "message"), "\n".join(data), fields.get("id"))
            fields, data = {}, []
            if item is not None:
                yield item

    def _item(self, kind: str, payload: str, event_id: str | None) -> Event | Frame | None:
        if kind.startswith("stream."):
            try:
                frame = _decode_frame(payload)
            except msgspec.ValidationError:
                return None  # a message a newer daemon sends that this client does not know
            if isinstance(frame, Hello) and event_id and self.cursor is None:
                self.cursor = int(event_id)  # where the server started us: resume from there
            return frame
        event = _decode_event(payload)
        if self.cursor is not None and event.seq <= self.cursor:
            return None  # never hand out an event twice, whatever the server does
        self.cursor = event.seq
        return event


def command_events(items: Iterable[object], command_id: str) -> Iterator[Event]:
    """From a session stream's items: the events of command ``command_id``, and every other
    event of the session between its start and its end (its tools' calls, other writers'),
    until its CommandResult. Start and end are the daemon's own (source "bus"): any member of
    the session may publish a CommandResult naming the command, which ended a follow early."""
    inside = False
    for item in items:
        if not isinstance(item, Event):
            continue
        ours = item.data.get("command_id") == command_id
        daemons = ours and item.source == "bus"
        if daemons and item.event_type == "CommandStarted":
            inside = True
        if not (inside or ours):
            continue
        yield item
        if daemons and item.event_type == "CommandResult":
            return
