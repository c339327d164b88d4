"""Live event streams over WebSocket and Server-Sent Events (docs/streams.md).

    WS  /api/sessions/{session_id}/events/stream     one session (the spec's endpoint)
    WS  /api/events/stream                           every session
    GET the same paths with ``Accept: text/event-stream`` (no upgrade): SSE

Query: ``event_type`` (repeatable or comma-separated; ``Prefix*``), ``source`` (same),
``since`` (a seq, or an ISO time; absent = live from now). SSE also honours ``Last-Event-ID``.

The ordering, resume and slow-consumer rules live in bus/streams.py; this module only decides
where a stream starts, then turns its items into frames. All frames of one connection are
written by one task (the sender), so control replies (pong, subscribed, error) are queued on
the subscription instead of being written from the receiving side.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web
from llmgine_daemon.aio import cancel_and_wait
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.api.guard import GUARD, PRINCIPAL, charge_message
from llmgine_daemon.api.keys import BUS, STREAMS, WEBSOCKETS
from llmgine_daemon.api.sockets import Socket
from llmgine_daemon.api.stream_conns import StreamConnection, StreamConnections
from llmgine_daemon.api.util import path_id, query_all
from llmgine_daemon.bus.errors import BusError, invalid
from llmgine_daemon.bus.streams import (
    CLOSE_GOING_AWAY,
    StreamFilter,
    StreamHub,
    Subscription,
)
from llmgine_daemon.protocol import WS_PROTOCOL, ErrorCode, Event, parse_iso
from llmgine_daemon.protocol.streams import (
    ClientFrame,
    End,
    Frame,
    Hello,
    Ping,
    Pong,
    StreamError,
    Subscribe,
    stream_error,
)

log = logging.getLogger("llmgine.streams")

routes = web.RouteTableDef()

# Pings (WebSocket) and comments (SSE) keep idle connections open through proxies and find
# dead peers; a WebSocket peer that misses a pong for this long is dropped.
HEARTBEAT = 15.0
# The event streams' subprotocol (docs/streams.md, docs/security.md). A browser that passes its
# credential as a subprotocol value (``llmgine.bearer.<TOKEN>``) offers this one beside it, and
# the server must select one of its offers (never the token): a browser drops a handshake
# whose reply names none of the subprotocols it offered. The generic protocol.WS_PROTOCOL
# (``llmgine``), what the streams selected before, is still accepted; aiohttp selects the
# first of the client's offers that is in SUBPROTOCOLS.
SUBPROTOCOL = "llmgine.events.v1"
SUBPROTOCOLS = (SUBPROTOCOL, WS_PROTOCOL)
# SSE: how long a browser's EventSource waits before reconnecting (it then sends
# Last-Event-ID, so nothing is lost).
SSE_RETRY_MS = 2000
# How long a closing WebSocket waits for the peer's close reply.
CLOSE_TIMEOUT = 3.0
# On shutdown, how long streams get to close cleanly before they are dropped.
SHUTDOWN_GRACE = 2.0

_json = msgspec.json.Encoder()
_decode_client_frame = msgspec.json.Decoder(ClientFrame).decode
# A message whose type is not a ClientFrame's: msgspec names the tag it refused.
_UNKNOWN_TYPE = re.compile(r"^Invalid value (?P<value>.*) - at `\$\.type`$")


# -- lifecycle -----------------------------------------------------------------------------


CONNECTIONS = web.AppKey("stream_connections", StreamConnections)


async def streams_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = StreamHub(app[BUS])
    await hub.start()
    app[STREAMS] = hub
    app[CONNECTIONS] = connections = StreamConnections()
    try:
        yield
    finally:
        await connections.stop()
        await hub.stop()


async def close_streams(app: web.Application) -> None:
    """On shutdown: every stream ends with 1001 at once, so no handler holds shutdown up."""
    hub = app.get(STREAMS)
    if hub is not None:
        hub.close_all(CLOSE_GOING_AWAY, "daemon shutting down")
        # Let each handler finish its close handshake itself; a stream still open after this
        # has a peer that stopped reading (its sender waits in a write): drop its connection,
        # or its close would wait for that peer for ever, and the shutdown with it.
        await hub.wait_idle(SHUTDOWN_GRACE)
        if hub.subscriptions() and app[CONNECTIONS].abort_all():
            log.warning("dropped the event streams whose clients did not read their close")


# -- request parsing -----------------------------------------------------------------------


def _multi(request: web.Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in query_all(request, name):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    return values


# A seq as Last-Event-ID, ?lastEventId= and ?since= give it: ASCII digits (str.isdigit() also
# takes "²", which int() refuses), few enough for int() (its limit: 4300 digits).
_SEQ = re.compile(r"[0-9]{1,30}")


def _since(request: web.Request, sse: bool) -> tuple[str, int | Any | None]:
    """Where the stream starts, and the name of what said so (errors name it)."""
    # SSE resumes from Last-Event-ID (an EventSource sends it itself), or from the same in the
    # query, where event-source-polyfill puts it (a header would cost a CORS preflight).
    header = request.headers.get("Last-Event-ID", "").strip() if sse else ""
    query = request.query.get("lastEventId", "").strip() if sse else ""
    name, raw = ("Last-Event-ID", header) if header else ("lastEventId", query) if query else ("since", "")
    raw = raw or request.query.get("since", "").strip()
    if not raw or raw == "now":
        return name, None
    if _SEQ.fullmatch(raw):
        return name, int(raw)
    if name == "since":
        try:
            return name, parse_iso(raw)
        except ValueError:
            pass
    raise invalid(name, "must be a seq (a non-negative integer) or an ISO 8601 time", value=raw[:64])


def _filter(request: web.Request) -> StreamFilter:
    session_id = path_id(request, "session_id") if "session_id" in request.match_info else None
    return StreamFilter(session_id, _multi(request, "event_type"), _multi(request, "source"))


def _wants_sse(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "*/*").lower()
    return "text/event-stream" in accept or "*/*" in accept


# -- the route -----------------------------------------------------------------------------


@routes.get("/api/events/stream")
@routes.get("/api/sessions/{session_id}/events/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    # No permessage-deflate: compressing every frame once per subscriber costs more CPU than
    # fan-out can spare, and the daemon is local. Client messages are small (subscribe, ping).
    ws = Socket(
        timeout=CLOSE_TIMEOUT,
        heartbeat=HEARTBEAT,
        protocols=SUBPROTOCOLS,
        compress=False,
        max_msg_size=64 * 1024,
    )
    ws.ends_with_session = "session_id" in request.match_info
    upgrade = ws.can_prepare(request).ok
    if not upgrade and not _wants_sse(request):
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "this endpoint streams: open a WebSocket, or send Accept: text/event-stream",
            {"field": "Accept", "issue": "expected a WebSocket upgrade or text/event-stream"},
            status=406,
        )
    flt = _filter(request)
    named, since = _since(request, sse=not upgrade)
    hub = request.app[STREAMS]
    # Subscribing checks the session and the cursor, so a refusal is a plain HTTP error
    # envelope (404 SESSION_NOT_FOUND, 422) before any upgrade.
    try:
        sub = await hub.subscribe(flt, since)
    except BusError as exc:
        if exc.details.get("field") == "since":  # a cursor beyond the log: as the client named it
            exc.details["field"] = named
        raise
    try:
        if upgrade:
            return await _serve_websocket(request, ws, hub, sub)
        if request.method == "HEAD":
            # The stream's head, not the stream: a HEAD answer has no body (written anyway, the
            # events would be read as the next answer on a kept-alive connection).
            return web.Response(headers=SSE_HEADERS)
        return await _serve_sse(request, hub, sub)
    finally:
        sub.close()


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # Reverse proxies (nginx) must not buffer a stream.
    "X-Accel-Buffering": "no",
}


def _hello(hub: StreamHub, sub: Subscription) -> Hello:
    return Hello(
        last_seq=hub.head, since=sub.cursor, replay=sub.replaying, **sub.filter.describe(), heartbeat=HEARTBEAT
    )


# -- WebSocket -----------------------------------------------------------------------------


async def _serve_websocket(
    request: web.Request, ws: web.WebSocketResponse, hub: StreamHub, sub: Subscription
) -> web.WebSocketResponse:
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    receiver = asyncio.create_task(
        _ws_receiver(ws, sub, request.transport, lambda: charge_message(request)), name="llmgine-ws-receiver"
    )
    connections = request.app[CONNECTIONS]
    conn = connections.watch(request.transport)
    end: End | None = None
    try:
        try:
            end = await _ws_send_loop(ws, hub, sub, conn)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("websocket send stopped: %s", exc)  # the peer went away mid-send
        finally:
            # Stop reading before closing: a close() while another task sits in receive() drops
            # the connection without waiting for the peer's close reply.
            receiver.cancel()
            try:
                await receiver
            except (asyncio.CancelledError, Exception):
                pass
        if not ws.closed:
            # Watched too: the close frame waits behind whatever a client that stopped reading left.
            if end is not None:
                await conn.write(ws.close(code=end.code, message=end.reason.encode()))
            else:
                await conn.write(ws.close())
    finally:
        connections.forget(conn)
    return ws


async def _ws_send_loop(
    ws: web.WebSocketResponse, hub: StreamHub, sub: Subscription, conn: StreamConnection
) -> End | None:
    sink = _FrameSink(ws, conn)
    await sink.send([_ws_frame(_json.encode(_hello(hub, sub)))])
    while True:
        items = await sub.get()
        if ws.closed:
            return None
        frames: list[bytes] = []
        end: End | None = None
        for item in items:
            if isinstance(item, End):
                end = item
                break
            if isinstance(item, Event):
                frames.append(hub.encoded(item, "ws", _ws_event_frame))
            else:
                frames.append(_ws_frame(_json.encode(item)))
        if frames:
            await sink.send(frames)
        if end is not None:
            return end


def _ws_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 5.2): what a server sends."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def _ws_event_frame(event: Event) -> bytes:
    return _ws_frame(b'{"type":"event","event":' + _json.encode(event) + b"}")


class _FrameSink:
    """Writes a batch of frames with ONE transport write.

    Fan-out to a hundred subscribers at a thousand events a second is dominated by the cost
    of one write call per frame (aiohttp's send_str). A server frame is unmasked, so the same
    bytes go to every subscriber: frames are built once (hub.encoded), joined per batch and
    written at once, with aiohttp's own flow control (pause -> drain). This reaches into the
    WebSocketWriter (transport, protocol); when that is not what we expect (another aiohttp,
    compression negotiated) it falls back to send_frame per message, correct but slower.
    """

    def __init__(self, ws: web.WebSocketResponse, conn: StreamConnection) -> None:
        self.ws = ws
        self.conn = conn  # waits for the client are watched (a client that reads nothing is dropped)
        writer = getattr(ws, "_writer", None)
        protocol = getattr(writer, "protocol", None)
        self.transport = getattr(writer, "transport", None)
        self.protocol = protocol
        self.fast = (
            self.transport is not None
            and hasattr(protocol, "_drain_helper")
            and hasattr(protocol, "_paused")
            and not getattr(writer, "compress", 0)
        )

    async def send(self, frames: list[bytes]) -> None:
        if not self.fast:
            for frame in frames:
                await self.conn.write(self.ws.send_frame(frame[_header_length(frame) :], WSMsgType.TEXT))
            return
        assert self.transport is not None and self.protocol is not None
        if self.transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if self.protocol._paused:
            # The peer is not keeping up: wait here; meanwhile the hub keeps filling (and,
            # when full, drops) this subscriber's bounded queue, never blocking anyone else.
            await self.conn.write(self.protocol._drain_helper())


def _header_length(frame: bytes) -> int:
    return 2 if frame[1] < 126 else 4 if frame[1] == 126 else 10


async def _ws_receiver(
    ws: web.WebSocketResponse,
    sub: Subscription,
    transport: asyncio.Transport | None,
    charge: Callable[[], ApiError | None],
) -> None:
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            refused = charge()
            if refused is not None:  # over the rate limit: answered, not acted on
                answered = sub.send_notice(stream_error(refused.code, refused.message, refused.details))
            elif msg.type == WSMsgType.TEXT:
                answered = _ws_command(sub, msg.data)
            else:
                answered = sub.send_notice(
                    stream_error(ErrorCode.VALIDATION_ERROR, "send JSON text messages, not binary")
                )
            if not answered:
                # MAX_NOTICES answers wait for a client that sends and does not read them: the
                # sender sits in a write; drop the connection (it would read no close frame).
                log.warning("dropped a WebSocket whose client sends messages without reading the answers")
                sub.stop(End(code=1008, reason="the client does not read the answers to its messages"))
                if transport is not None:
                    transport.abort()
                return
    finally:
        # The peer closed (or vanished): wake the sender so the handler can finish.
        sub.stop(End(code=1000, reason="closed by the client"))


def _ws_command(sub: Subscription, text: str) -> bool:
    """Handle one client message (a protocol ClientFrame); mistakes are answered with an
    error message, not a close. False: the answer could not be queued (``send_notice``)."""
    try:
        msg = _decode_client_frame(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return sub.send_notice(_refused(str(exc)))
    if isinstance(msg, Ping):
        return sub.send_notice(Pong())
    assert isinstance(msg, Subscribe)
    try:
        return sub.change_filter(sub.wanted.with_types(msg.event_types, msg.sources))
    except BusError as exc:
        return sub.send_notice(stream_error(exc.code, exc.message, exc.details))


def _refused(issue: str) -> StreamError:
    unknown = _UNKNOWN_TYPE.match(issue)
    if unknown:
        return stream_error(
            ErrorCode.VALIDATION_ERROR,
            f"unknown message type {unknown.group('value')}",
            {"field": "type", "issue": "must be subscribe or ping"},
        )
    return stream_error(ErrorCode.VALIDATION_ERROR, f"bad message: {issue}")


# -- Server-Sent Events ----------------------------------------------------------------------


def _sse_field(text: str) -> str:
    # A line break would end the field early and let the value inject fields of its own.
    return text.replace("\r", " ").replace("\n", " ")


def _sse_event_frame(event: Event) -> bytes:
    head = f"id: {event.seq}\nevent: {_sse_field(event.event_type)}\ndata: ".encode()
    return head + _json.encode(event) + b"\n\n"


def _sse_frame(hub: StreamHub, item: Event | Frame) -> bytes:
    if isinstance(item, Event):
        return hub.encoded(item, "sse", _sse_event_frame)
    return b"event: stream." + item.type.encode() + b"\ndata: " + _json.encode(item) + b"\n\n"


async def _serve_sse(request: web.Request, hub: StreamHub, sub: Subscription) -> web.StreamResponse:
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.session_id is None:
        # Revoking (or the expiry of) the key that opened it ends it with code 1008, as it
        # closes a WebSocket. (A session token's stream is its session's, which ends with it.)
        request.app[GUARD].sockets.track(principal, sub)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    hello = _json.encode(_hello(hub, sub)).decode()
    # The hello carries the start cursor as its id, so a browser that reconnects before the
    # first event still resumes from the right place (it sends it back as Last-Event-ID).
    await resp.write(f"retry: {SSE_RETRY_MS}\nid: {sub.cursor}\nevent: stream.hello\ndata: {hello}\n\n".encode())
    connections = request.app[CONNECTIONS]
    conn = connections.watch(request.transport)
    gone = conn.gone
    getter: asyncio.Task[list[Any]] | None = None
    try:
        while True:
            if getter is None:
                getter = asyncio.create_task(sub.get())
            done, _ = await asyncio.wait({getter, gone}, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                if gone in done:
                    log.debug("SSE client went away (connection closed)")
                    return resp
                await conn.write(resp.write(b": ping\n\n"))
                continue
            items, getter = getter.result(), None
            chunks: list[bytes] = []
            end: End | None = None
            for item in items:
                if isinstance(item, End):
                    end = item
                    break
                chunks.append(_sse_frame(hub, item))
            if chunks:
                await conn.write(resp.write(b"".join(chunks)))
            if end is not None:
                # SSE has no close code: say why it ends (1000 = nothing more will come,
                # 1001 = the daemon is going away: reconnect with Last-Event-ID).
                await conn.write(resp.write(b"event: stream.end\ndata: " + _json.encode(end) + b"\n\n"))
                break
        await resp.write_eof()
    except (ConnectionError, RuntimeError) as exc:
        log.debug("SSE client went away: %s", exc)
    finally:
        connections.forget(conn)
        await cancel_and_wait(getter)
    return resp
