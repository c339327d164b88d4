"""The fast lane: the two busiest writes over TCP, ``POST /api/sessions/{id}/events`` and
``POST /api/sessions/{id}/commands`` (``?wait=N``), without aiohttp's Request and Response.

Why: on aiohttp's path (protocol, Request, router, the edge, Response) such a request cost
about as much CPU as the bus and the store's work for it. A request answered here costs much
less (bench/README.md, "The fast lane"), with the same checks, the same bus call, the same
answer. The routes, what each checks and does, are in api/fastroutes.py.

What it serves: those requests, exactly, on the TCP listeners (server.py's ``TcpSite``) when
``server.fast_lane`` is on (the default). Every request is first read here; one that is not
that shape, or not plainly fine, goes to aiohttp as it came, and so does everything the
connection sends after it (the connection is aiohttp's from then on, for good: its parser
needs a connection from its start or from a request boundary, and never two servers on one
stream). So whatever is unusual - another route, another query, ``Transfer-Encoding``,
``Expect``, ``Origin``, ``Idempotency-Key``, ``Prefer``, ``Content-Encoding``, ``Connection``
other than ``keep-alive``, a header line that is not plainly ``name: value``, a repeated
header, a head or body not whole in the bytes at hand, a body over ``server.max_body_size``, a
missing or unknown credential, a session token of another session, a body the route would
refuse, a rate limit reached, a daemon stopping - is answered by aiohttp and the edge
(api/edge.py), which produce every refusal and its envelope. The fast lane only ever answers
requests that pass every check the edge makes, and errors that come from the bus or the store
once the request has been taken (the envelope of api/errors.py, as the edge would build it).

It is a strict subset of HTTP/1.1 by construction: a byte sequence it accepts is one aiohttp's
parser reads the same way (one request line, ``name: value`` lines of token names and printable
ASCII values, one ``Content-Length``, no other framing), so no request can mean one thing here
and another there. Held to it by tests/e2e/test_fast_lane.py (the same bytes to a daemon with
and without the lane, case by case) and tests/fuzz/test_fast_lane_diff.py (mutated requests,
byte by byte, to both).

The same steps as the edge, in the same order of effect: the request id, the span (continuing
``traceparent``), Host, the credential (``Credentials.verify``), the session token's scope, the
body (the route's model, the same decoder and depth rule), the rate limit (charged only when all
of those passed: a refused request costs what it costs on the aiohttp path), the route's work,
metrics and the span's end with the status; the answer has the headers aiohttp's would
(Content-Type, the request id, the version, RateLimit when charged, Content-Length, Date,
Server, traceparent; ``Connection: close`` once stopping). One request at a time per
connection (answers in order); bytes a client pipelines behind it wait.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from llmgine_daemon import __version__
from llmgine_daemon.api.errors import error_envelope, request_id_from
from llmgine_daemon.api.fastroutes import ROUTES, Route
from llmgine_daemon.api.guard import GUARD, rate_key
from llmgine_daemon.api.keys import BUS, OBSERVABILITY, SETTINGS, SHUTDOWN
from llmgine_daemon.api.observability import begin, end_request
from llmgine_daemon.bus.auth import AuthFailure
from llmgine_daemon.protocol import REQUEST_ID_HEADER, VERSION_HEADER
from llmgine_daemon.protocol.grammar import valid_id

# The id's characters here, the whole grammar (protocol/grammar.py) checked after; a query is
# ``?wait=N`` alone (the commands route's; the events route takes none).
_REQUEST_LINE = re.compile(
    rb"POST /api/sessions/([A-Za-z0-9_][A-Za-z0-9._:-]{0,127})/(events|commands)"
    rb"(?:\?wait=([0-9]{1,3}(?:\.[0-9]{1,6})?))? HTTP/1\.1\r\n"
)
# Header lines as RFC 9110 has them, without obsolete folding: a token, a colon, then printable
# ASCII, spaces and tabs (anything else, UTF-8 included, is aiohttp's to read), each ended by CRLF.
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\x20-\x7e\t]*\r\n)*")
_JSON_TYPE = re.compile(rb"application/json(?:[ \t]*;[ \t]*charset=\"?utf-8\"?)?", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]{1,12}")
# Headers whose presence sends a request to aiohttp (see the module docstring).
_REFUSED = frozenset(
    {b"transfer-encoding", b"expect", b"origin", b"idempotency-key", b"content-encoding", b"upgrade", b"te", b"prefer"}
)
MAX_FIELDS = 32  # header lines; a request with more is aiohttp's (which takes up to 128)
# While a request is in flight, aiohttp's idle timer (server.read_timeout) is pushed this far.
BUSY_S = 1e9
MAX_PENDING = 256 * 1024  # bytes pipelined behind a request in flight before reading pauses
# The requests in flight, by connection (the id of its aiohttp protocol): server.py's drain sees
# them as work, and its stop waits for them (``finish``) as aiohttp waits for its handlers.
IN_FLIGHT: dict[int, asyncio.Task[None]] = {}


async def finish(timeout: float) -> None:
    """Wait up to ``timeout`` for the requests in flight (the daemon is stopping: new ones go
    to aiohttp's path, which answers ``Connection: close``): aiohttp gives its own handlers
    ``server.shutdown_timeout`` the same way before it closes their connections."""
    tasks = list(IN_FLIGHT.values())
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


_date: list[Any] = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, formatdate(now, usegmt=True)
    return str(_date[1])


class _Request:
    """One request the fast lane took: what its answer needs."""

    __slots__ = ("route", "session_id", "prepared", "request_id", "traceparent", "rate_headers")

    def __init__(self, route: Route, session_id: str, prepared: Any, headers: dict[bytes, bytes]) -> None:
        self.route = route
        self.session_id = session_id
        self.prepared = prepared
        supplied = headers.get(b"x-request-id")
        self.request_id = request_id_from(supplied.decode("latin-1") if supplied is not None else None)
        parent = headers.get(b"traceparent")
        self.traceparent = parent.decode("latin-1") if parent is not None else None
        self.rate_headers: dict[str, str] = {}


class _Parsed:
    __slots__ = ("route", "session_id", "wait", "headers", "body", "stop")

    def __init__(
        self, route: Route, session_id: str, wait: bytes | None, headers: dict[bytes, bytes], body: bytes, stop: int
    ) -> None:
        self.route, self.session_id, self.wait = route, session_id, wait
        self.headers, self.body, self.stop = headers, body, stop


def _parse(data: bytes, at: int, max_head: int) -> _Parsed | None:
    """The request at ``data[at:]``, when it is the fast lane's shape and whole: its route,
    session id, ``?wait``, headers (lower-case names), body and where the next request begins. A head over
    ``max_head`` bytes (``server.max_header_size``, aiohttp's limit for one line) or over
    MAX_FIELDS lines is aiohttp's: stricter than its own limits, never looser."""
    line = _REQUEST_LINE.match(data, at)
    if line is None:
        return None
    fields_at = line.end()
    end = data.find(b"\r\n\r\n", fields_at - 2, at + max_head)
    if end < 0:
        return None
    headers: dict[bytes, bytes] = {}
    if end > fields_at - 2:
        if _FIELDS.fullmatch(data, fields_at, end + 2) is None:
            return None
        fields = data[fields_at:end].split(b"\r\n")
        if len(fields) > MAX_FIELDS:
            return None
        for field in fields:
            name, _, value = field.partition(b":")  # (a name has no colon: _FIELDS)
            name = name.lower()
            if name in headers or name in _REFUSED:
                return None
            headers[name] = value.strip(b" \t")
    length = headers.get(b"content-length")
    if length is None or _DIGITS.fullmatch(length) is None:
        return None
    start = end + 4
    stop = start + int(length)
    if stop > len(data):
        return None
    connection = headers.get(b"connection")
    if connection is not None and connection.lower() != b"keep-alive":
        return None
    session_id = line.group(1).decode("ascii")
    if not valid_id(session_id):
        return None
    return _Parsed(ROUTES[line.group(2)], session_id, line.group(3), headers, data[start:stop], stop)


def _credential(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(b" ")
        value = value.strip()
        return value.decode("latin-1") if scheme.lower() == b"bearer" and value else None
    token = headers.get(b"x-session-token")
    return token.decode("latin-1") if token else None


def _json_body(headers: dict[bytes, bytes]) -> bool:
    """Whether the body may be read as JSON: ``read_json``'s rule (api/util.py), strictly."""
    content_type = headers.get(b"content-type")
    return content_type is None or _JSON_TYPE.fullmatch(content_type) is not None


def _answer(status: int, headers: dict[str, str], body: bytes) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    tail = f"Content-Length: {len(body)}\r\nDate: {_http_date()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
    return (_status_line(status) + fields + tail).encode("latin-1") + body


@functools.cache
def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"


_encoder = msgspec.json.Encoder()


class Lane:
    """What every connection of one listener needs, looked up once."""

    def __init__(self, app: web.Application) -> None:
        self.guard = app[GUARD]
        self.bus = app[BUS]
        self.obs = app[OBSERVABILITY]
        self.shutdown = app[SHUTDOWN]
        self.max_body = app._client_max_size  # what aiohttp's path refuses with 413
        self.max_head = int(app[SETTINGS]["server.max_header_size"])
        self.taken = self.obs.registry.counter("http_fast_lane_requests_total")


class FastLane(asyncio.Protocol):
    """A TCP connection's protocol: the fast lane's requests here, the rest to ``inner``
    (aiohttp's protocol for this connection, made and connected with it).

    Bytes are read into ``buffer``, taken from ``at`` one request at a time: while a request
    is in flight, or while the transport asks us not to write (a client that does not read its
    answers), what arrives is only kept, and reading pauses past MAX_PENDING, as aiohttp's path
    does with its own queue."""

    def __init__(self, inner: Any, lane: Lane) -> None:
        self.inner = inner
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.open = True  # False once the connection is aiohttp's
        self.busy = False
        self.buffer = b""
        self.at = 0
        self.read_paused = False
        self.write_paused = False
        self.eof = False  # the client shut down its side: answer what it sent, then close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.inner.data_received(data)
            return
        if self.at < len(self.buffer):
            self.buffer = self.buffer[self.at :] + data
        else:
            self.buffer = data
        self.at = 0
        if len(self.buffer) > MAX_PENDING and not self.read_paused:
            # (whatever is in flight: a request, or answers the client does not read)
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._next()

    def _next(self) -> None:
        """Take the next request in the buffer, if the connection is free to answer it."""
        if self.busy or not self.open:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.at >= len(self.buffer):
            if self.eof:  # all it sent before its EOF is answered
                transport.close()
            return
        if self.write_paused:
            return
        taken = self._check(self.buffer, self.at)
        if taken is None:
            self._hand_over()
            return
        request, self.at = taken
        self.busy = True
        inner = self.inner
        loop = asyncio.get_running_loop()
        # aiohttp's idle timer must not close the connection under a request it does not know of.
        inner._next_keepalive_close_time = loop.time() + BUSY_S
        IN_FLIGHT[id(inner)] = loop.create_task(self._serve(request))

    def _check(self, data: bytes, at: int) -> tuple[_Request, int] | None:
        """The request at ``data[at:]`` if it passes every check the edge makes (then charged
        against its rate limit), and where the next begins; None: aiohttp's."""
        lane = self.lane
        parsed = _parse(data, at, lane.max_head)
        if parsed is None:
            return None
        headers = parsed.headers
        guard = lane.guard
        inner = self.inner
        if lane.shutdown.is_set() or inner._force_close or inner._close:
            return None
        host = headers.get(b"host")
        if not guard.hosts.allows(host.decode("latin-1") if host is not None else None):
            return None
        presented = _credential(headers)
        if presented is None or guard.credentials is None:
            return None
        try:
            principal = guard.credentials.verify(presented)
        except AuthFailure:
            return None
        if principal.session_id is not None and principal.session_id != parsed.session_id:
            return None
        raw = parsed.body
        if (lane.max_body and len(raw) > lane.max_body) or not _json_body(headers):
            return None
        prepared = parsed.route.prepare(raw, parsed.wait, principal)
        if prepared is None:
            return None
        request = _Request(parsed.route, parsed.session_id, prepared, headers)
        decision = guard.limiter.hit("key", rate_key(principal))
        if decision is not None:
            if not decision.allowed:  # took nothing: aiohttp's path answers the 429
                return None
            request.rate_headers = decision.headers()
        return request, parsed.stop

    def _hand_over(self) -> None:
        """The connection is aiohttp's from here on, starting with what is left unread."""
        self.open = False
        data, self.buffer, self.at = self.buffer[self.at :], b"", 0
        if self.read_paused:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        if data:
            self.inner.data_received(data)
        if self.eof and not self.inner.eof_received():  # (aiohttp's: nothing left to answer)
            assert self.transport is not None
            self.transport.close()

    async def _serve(self, request: _Request) -> None:
        lane = self.lane
        obs = lane.obs
        route = request.route
        observed = begin(obs, "POST", route.template, request.session_id, request.traceparent, request.request_id)
        if obs.metrics_enabled:
            lane.taken.inc()
        status = 500
        try:
            try:
                status, value, headers = await route.run(lane.bus, request.session_id, request.prepared)
                body = _encoder.encode(value)
                headers = {"Content-Type": "application/json", **headers}
            except Exception as exc:
                response = error_envelope(request.request_id, exc, f"POST {route.template}")
                status = response.status
                headers = {name: value for name, value in response.headers.items() if name != "Content-Length"}
                body = response.body if isinstance(response.body, bytes) else b""
            headers[REQUEST_ID_HEADER] = request.request_id
            headers[VERSION_HEADER] = __version__
            for name, value in request.rate_headers.items():
                headers.setdefault(name, value)
            headers["traceparent"] = observed.span.traceparent
            closing = lane.shutdown.is_set() or headers.get("Connection", "").lower() == "close"
            if closing:
                headers["Connection"] = "close"
            self._write(_answer(status, headers, body), closing)
        except asyncio.CancelledError:
            status = 499
            if self.transport is not None:  # no answer will come: nothing after it may take its place
                self.transport.close()
            raise
        finally:
            end_request(observed, status)
            self._done()

    def _write(self, answer: bytes, closing: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client went away: the event is stored all the same
        transport.write(answer)
        if closing:
            transport.close()

    def _done(self) -> None:
        self.busy = False
        IN_FLIGHT.pop(id(self.inner), None)
        self._idle_from_now()
        if self.read_paused and len(self.buffer) - self.at <= MAX_PENDING and not self.write_paused:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._next()

    def _idle_from_now(self) -> None:
        """aiohttp's idle timer (from accept, and after each answer) counts from this answer: the
        connection closes after ``server.read_timeout`` without a request, as on aiohttp's path."""
        inner = self.inner
        timeout = inner._keepalive_timeout
        if not timeout:
            return
        loop = asyncio.get_running_loop()
        close_at = inner._next_keepalive_close_time = loop.time() + timeout
        handle = inner._keepalive_handle
        if handle is None or handle.when() > close_at:  # (it was put off while the request ran)
            if handle is not None:
                handle.cancel()
            inner._keepalive_handle = loop.call_at(close_at, inner._process_keepalive)

    def eof_received(self) -> bool | None:
        """The client shut down its side: what it sent before is still answered (the requests
        in flight and buffered here, or aiohttp's), then the connection closes (``_next``)."""
        if self.open:
            self.eof = True
            if self.busy or self.at < len(self.buffer):
                return True
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.inner.resume_writing()
        if self.read_paused and self.open and len(self.buffer) - self.at <= MAX_PENDING:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._next()


def fast_laned(factory: Any, app: web.Application) -> Any:
    """A protocol factory whose connections take the fast lane's requests first (server.py)."""
    lane = Lane(app)
    return lambda: FastLane(factory(), lane)
