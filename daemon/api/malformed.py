"""Requests aiohttp cannot parse, answered with the error envelope like every other error.

A request line or header over ``server.max_header_size``, a bad ``Content-Length``, a broken
chunked body, an unknown method, TLS sent to the plain port: aiohttp's parser refuses these
before any route or middleware runs (api/edge.py never sees them), and by default answers
with a ``text/plain`` body and logs each one at ERROR with a traceback, so anyone who can
connect could fill the log. Here each listener's connections answer them with the envelope
(``400``, ``VALIDATION_ERROR``, ``details.issue`` = what the parser said, the request id and
version headers) and log one DEBUG line; the connection is closed, as aiohttp does. An error
past the parser that escaped the edge (a bug) stays a logged 500, in the envelope too.

How: the sites of server.py (``EnvelopingSite``, and coalesce.py's ``CoalescingSite`` built on
it) serve each connection with aiohttp's own protocol, made by aiohttp's server as always, as
an ``EnvelopingHandler``: a subclass that overrides ``handle_error`` (aiohttp's hook for
these answers) and ``data_received``, to refuse a request head over HEAD_LINES header lines'
worth of bytes the same way, or a request line in an HTTP version other than 1.1 and 1.0
(``505``: aiohttp answered in the request's version, "HTTP/2.0 200 OK" framed as HTTP/1.1). It
also answers what a client sent before shutting down its side (``eof_received``, then closes).
aiohttp and its parser are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentLengthError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from llmgine_daemon.api.errors import error_response, stamp_response
from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.protocol import ErrorCode

log = logging.getLogger("llmgine.api")


def _issue(exc: BaseException | None, message: str | None) -> str:
    """What the parser said, on one line and short (it may quote the client's bytes)."""
    text = str(getattr(exc, "message", "") or message or exc or "malformed request")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "malformed request")
    return first[:200]


# The HTTP versions served; another in a request line is 505 (aiohttp answered it in that
# version's name: "HTTP/2.0 200 OK", "HTTP/0.9 403 Forbidden", framed as HTTP/1.1).
_VERSIONS = ((1, 1), (1, 0))
# A request head (request line and headers) may hold this many header lines' worth of bytes
# (server.max_header_size each); past it the request is refused like any head the parser refuses.
HEAD_LINES = 8


class _Head:
    """How much of a request head a connection has sent so far (EnvelopingHandler), and
    whether the client has shut down its side (``eof``: no more requests will come)."""

    __slots__ = ("size", "body", "eof", "answered")

    def __init__(self) -> None:
        self.size = 0
        self.body: StreamReader | None = None  # the body of the last request whose head was whole
        self.eof = False
        self.answered = 0  # answers sent (RequestHandler counts the requests parsed)


# Per connection (keyed by the protocol's id, dropped when the connection ends): the handler
# keeps RequestHandler's layout, so it cannot hold this itself.
_HEADS: dict[int, _Head] = {}


def _head_size(message: RawRequestMessage) -> int:
    line = len(message.method) + len(message.path) + len(" HTTP/1.1\r\n ")
    return line + sum(len(name) + len(value) + 4 for name, value in message.raw_headers)


class EnvelopingHandler(RequestHandler):
    """aiohttp's protocol, answering what its parser refuses with the envelope, and refusing a
    request head over HEAD_LINES x ``server.max_header_size`` bytes.

    aiohttp bounds each header line and their number (128), not the head: a client that sent
    120 headers of 8 KB and then nothing held about 2 MB of the daemon's memory per connection
    until the read timeout, before any credential was asked for (400 such connections, from
    anyone who can connect: +770 MB in a second)."""

    __slots__ = ()  # the same layout as RequestHandler: an instance's class can be switched

    def data_received(self, data: bytes) -> None:
        if self._payload_parser is not None or self._upgraded or self._force_close or self._close:
            super().data_received(data)
            return
        head = _HEADS.setdefault(id(self), _Head())
        if head.size < 0:
            return  # refused: the answer closes the connection, nothing more is read
        in_head = head.body is None or head.body.is_eof()  # else these bytes are (mostly) a body's
        queued = len(self._messages)
        super().data_received(data)
        limit = HEAD_LINES * self.max_field_size
        for i in range(queued, len(self._messages)):  # heads completed in this chunk
            message = self._messages[i][0]
            if not isinstance(message, RawRequestMessage):
                continue
            if _head_size(message) > limit:
                refusal = 400, f"request head over {limit} bytes"
            elif message.version not in _VERSIONS:  # (answered "HTTP/2.0 200 OK", framed as 1.1)
                major, minor = message.version
                refusal = 505, f"HTTP/{major}.{minor} is not served: HTTP/1.1 or HTTP/1.0"
            else:
                continue
            while len(self._messages) > i:  # it and whatever was pipelined after it
                self._messages.pop()
            self._refuse(head, *refusal)
            return
        if len(self._messages) > queued:  # count the next head afresh
            head.size = 0
            head.body = self._messages[-1][1]
            return
        if in_head:
            head.size += len(data)
            if head.size > limit:
                self._refuse(head, 400, f"request head over {limit} bytes")

    def _refuse(self, head: _Head, status: int, text: str) -> None:
        """Answer ``status`` (``handle_error``, as for what the parser refuses) and read no more."""
        head.size = -1
        exc = BadHttpMessage(text)
        self._messages.append((_ErrInfo(status=status, exc=exc, message=exc.message), EMPTY_PAYLOAD))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool | None:
        """The client shut down its side (``shutdown(SHUT_WR)``, ``nc -N``, an HTTP/1.0 client):
        the requests it sent before are still answered, then the connection closes. aiohttp's
        own returns None, and asyncio then closed the transport at once, the answers with it.
        Nothing to answer (idle, half a head, an open WebSocket or event stream): closed now, as
        before (a request the parser took for an upgrade, ``CONNECT`` or ``Upgrade:``, is still
        answered).
        A body cut short by the EOF will never be whole: its reader fails (400 from
        ``read_body``) rather than waiting for the read timeout."""
        if self._payload_parser is not None or self._force_close:
            return None
        current = self._current_request
        if current is not None and current.writer.output_size > 0:  # an event stream: its client left
            return None  # (closed, so the stream's sweep frees its slot at once: api/stream_conns.py)
        head = _HEADS.setdefault(id(self), _Head())
        if self._request_count <= head.answered:  # (a handler's task may not have started yet)
            return None
        head.eof = True
        body = head.body
        if body is not None and not body.is_eof() and body.exception() is None:
            body.set_exception(ContentLengthError("the client closed its side before the whole body arrived"))
        return True

    async def finish_response(
        self, request: Any, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        head = _HEADS.get(id(self))  # (none once the connection is lost)
        if head is None:
            return answered
        head.answered += 1
        if head.eof and not self._messages:  # the last answer of a half-closed connection
            self.force_close()  # (its write is flushed first: asyncio's close, coalesce.py's)
        return answered

    def connection_lost(self, exc: BaseException | None) -> None:
        _HEADS.pop(id(self), None)
        super().connection_lost(exc)

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is half sent: aiohttp breaks the connection
            return super().handle_error(request, status, exc, message)
        request_id = new_id()
        if status >= 500 and status != 505:
            log.error("unhandled error (request %s)", request_id, exc_info=exc)
            response = error_response(
                request_id,
                ErrorCode.INTERNAL_ERROR,
                f"internal error; see the daemon log for request {request_id}",
                status=status,
            )
        else:
            issue = _issue(exc, message)
            log.debug("malformed request from %s: %s (request %s)", request.remote, issue, request_id)
            what = "HTTP version not supported" if status == 505 else "malformed HTTP request"
            response = error_response(request_id, ErrorCode.VALIDATION_ERROR, what, {"issue": issue}, status=status)
        stamp_response(response, request_id)
        response.force_close()
        return response


def enveloping(factory: Callable[[], Any]) -> Callable[[], Any]:
    """aiohttp's protocol factory (a ``web.Server``), its protocols answering with envelopes.

    The server makes a ``RequestHandler`` (with the options it was given); its class becomes
    ``EnvelopingHandler``, which answers with envelopes and bounds a request head."""

    def make() -> Any:
        protocol = factory()
        if type(protocol) is RequestHandler:
            protocol.__class__ = EnvelopingHandler
        return protocol

    return make


class EnvelopingSite(web.SockSite):
    """``web.SockSite`` whose connections answer unparseable requests with the envelope."""

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        server = self._runner.server
        assert server is not None
        return enveloping(server)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol_factory(), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )
