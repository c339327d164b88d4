"""The boundary: who may connect, from where, and how often. Whoever passes can run code as
the user (tools and handlers are Python source), so these checks are the security boundary;
the sandbox only limits the damage.

The guard is one pass (``guarded``, called by the edge in api/edge.py inside its error handling,
so every refusal is the one envelope) for every route, present and future, running six steps in
this order, each a function of its own:

1. ``check_transport``: on the Unix socket the peer's uid (SO_PEERCRED) must be ours or
   root, else 403. Over TCP ``Host`` must be allowed (403), ``Origin`` (when sent) must be
   listed or our own (403); CORS preflights are answered here, without credentials and
   without taking from any rate-limit bucket.
2. ``authenticate``: the socket's owner needs no credential. Over TCP:
   ``Authorization: Bearer`` (API key, API_KEY_SECRET, or a session token),
   ``X-Session-Token``; on WebSocket handshakes and event streams, which browsers cannot give
   headers, also a ``llmgine.bearer.<TOKEN>`` subprotocol or a ``token`` query parameter.
   None or a bad one: 401 + ``WWW-Authenticate: Bearer``, counted against the IP's bucket
   (429 once it is empty). Only ``/api/health`` and the docs pages are open.
3. ``charge_request`` (buckets in api/ratelimit.py): the principal's bucket (the
   owner's only with ``rate_limits.unix_socket``), the IP's without a credential; TCP
   WebSocket handshakes also take from the IP's websocket bucket.
4. ``read_body`` (api/limits.py): the body is read within ``server.read_timeout`` (408);
   ``Expect: 100-continue`` is answered then, another expectation is 417 just before.
5. ``check_scope``: path identifiers are validated; a session token must stay inside its
   session (403), and may register code (tools, handlers) only with
   ``sandbox.session_token_registration`` (403).
6. ``with_stream_caps``: WebSockets and event streams may not exceed ``max_websockets``
   open at once, nor ``max_websockets_per_credential`` per API key / per session (the socket
   owner: no per-credential cap).

Capacity limits on sessions, engines and tools are the bus's own (bus/capacity.py).

Headers that belong on every response (RateLimit, CORS) are stamped by ``prepare_response``
(the edge's prepare hook) so error responses and WebSocket handshakes carry them too. WebSockets are tracked per
credential (api/sockets.py): revoking a key or ending a session closes them with 1008; so are an
API key's event streams (api/streams.py registers them: they end with ``stream.end`` 1008).

Credentials are never logged: log lines name a key by its prefix (``lgk_<id>``) only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from llmgine_daemon.api.errors import ApiError, Handler
from llmgine_daemon.api.keys import BUS, CREDENTIALS, SETTINGS, WEBSOCKETS
from llmgine_daemon.api.limits import check_expectation, check_identifiers, json_field, read_body
from llmgine_daemon.api.origins import HostPolicy, OriginPolicy, target_host
from llmgine_daemon.api.ratelimit import Decision, RateLimiter
from llmgine_daemon.api.sockets import SocketRegistry, close_expired
from llmgine_daemon.api.util import checks_own_scope, read_json, takes_code
from llmgine_daemon.bus.auth import SYNC_EVERY, AuthFailure, Credentials, Principal
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.observability.redact import install_filters
from llmgine_daemon.protocol import (
    SESSION_TOKEN_HEADER,
    WS_PROTOCOL,
    WS_TOKEN_PROTOCOL_PREFIX,
    EngineCreate,
    ErrorCode,
)
from llmgine_daemon.settings import Settings

log = logging.getLogger("llmgine.auth")

OPEN_PATHS = frozenset({"/api/health", "/docs", "/redoc"})
# The documentation pages' HTML, scripts and styles hold no data: they open without a
# credential and ask for one to fetch /openapi.json (which any valid credential may read,
# a session token included: it describes the API, not anyone's data).
OPEN_PREFIXES = ("/docs/static/",)
# The engine types' catalogue is no one's data either, and a page holding a session token needs
# it to create an engine in its session (which the token may).
ANY_SCOPE_PATHS = frozenset({"/openapi.json", "/api/engines/types", *OPEN_PATHS})
# Collections across sessions that a session token may read, narrowed to its own session.
SESSION_FILTERED = frozenset({"/api/commands", "/api/commands/wait"})


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


PREFLIGHT_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_UCRED = struct.Struct("3i")
# How often open WebSockets are checked for keys that expired while they were open.
EXPIRY_SWEEP_SECONDS = 30.0
# aiohttp's own default, so a handler that chose its own max_msg_size keeps it.
_AIOHTTP_DEFAULT_MSG_SIZE = 4 * 1024 * 1024

PRINCIPAL = web.RequestKey("principal", Principal)
_HEADERS = web.RequestKey("security_headers", dict)


@dataclass
class Guard:
    settings: Settings
    limiter: RateLimiter
    hosts: HostPolicy
    origins: OriginPolicy
    sockets: SocketRegistry = field(default_factory=SocketRegistry)
    open_websockets: int = 0
    # Open WebSockets per holder (see websocket_holder), for max_websockets_per_credential.
    websockets_by_holder: dict[str, int] = field(default_factory=dict)
    # The app's keys and tokens (app[CREDENTIALS]), once security_ctx has loaded them.
    credentials: Credentials | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        limits = {
            "anonymous": settings["security.rate_limits.unauthenticated"],
            "key": settings["security.rate_limits.authenticated"],
            "websocket": settings["security.rate_limits.websocket"],
        }
        return cls(settings, RateLimiter(limits), HostPolicy(settings), OriginPolicy(settings))


GUARD = web.AppKey("guard", Guard)


# -- transport ---------------------------------------------------------------------------


def _socket_of(request: web.Request) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


# A connection's peer cannot change: its uid is read once per connection, not per request.
_PEER_UIDS: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = weakref.WeakKeyDictionary()


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of a Unix socket; None for TCP."""
    transport = request.transport
    if transport is not None and (uid := _PEER_UIDS.get(transport)) is not None:
        return uid
    sock = _socket_of(request)
    if transport is None or sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(creds)
    _PEER_UIDS[transport] = uid
    return uid


def is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _browser_stream(request: web.Request) -> bool:
    """Requests a browser makes without being able to set headers: WebSocket, EventSource (to
    an event stream only: not a ``?token=`` on any GET asking for text/event-stream)."""
    resource = request.match_info.route.resource if request.method == "GET" else None
    return is_websocket(request) or (
        resource is not None
        and resource.canonical in EVENT_STREAMS
        and "text/event-stream" in request.headers.get(hdrs.ACCEPT, "")
    )


EVENT_STREAMS = frozenset({"/api/events/stream", "/api/sessions/{session_id}/events/stream"})


# -- errors ------------------------------------------------------------------------------


def unauthorized(message: str, *, invalid: bool) -> ApiError:
    challenge = 'Bearer realm="llmgine"' + (', error="invalid_token"' if invalid else "")
    return ApiError(ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def forbidden(message: str, **details: str) -> ApiError:
    return ApiError(ErrorCode.FORBIDDEN, message, dict(details))


def rate_limited(decision: Decision) -> ApiError:
    return ApiError(
        ErrorCode.RATE_LIMITED,
        f"rate limit exceeded ({decision.limit} per minute, policy {decision.policy}); "
        f"retry in {decision.retry_after}s",
        {"policy": decision.policy, "limit": decision.limit, "window": 60, "retry_after": decision.retry_after},
        headers=decision.headers(),
    )


# -- credentials -------------------------------------------------------------------------


def presented_credential(request: web.Request) -> str | None:
    """The credential the request carries, from wherever this kind of request may carry it."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("malformed Authorization header: use `Bearer <key>`", invalid=True)
        return value.strip()
    token = request.headers.get(SESSION_TOKEN_HEADER)
    if token is not None:
        return token.strip()
    if _browser_stream(request):
        for offered in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
            offered = offered.strip()
            if offered.startswith(WS_TOKEN_PROTOCOL_PREFIX):
                return offered[len(WS_TOKEN_PROTOCOL_PREFIX) :]
        if "token" in request.query:
            return request.query["token"]
    return None


async def in_session_scope(request: web.Request, session_id: str) -> bool:
    """Whether a request with a token for ``session_id`` stays inside that session:
    its own paths, its engines, and the engine collection filtered/created for it."""
    info = request.match_info
    if checks_own_scope(info.handler):
        return True  # webhooks, schedules: the bus checks the rows' session (bus/scoping.py)
    if "session_id" in info:
        return info["session_id"] == session_id
    if "engine_id" in info:
        return await request.app[BUS].engines.session_of(info["engine_id"]) == session_id
    resource = info.route.resource
    if resource is not None and resource.canonical in SESSION_FILTERED:
        return True  # the route narrows what it shows to the token's session (api/lifecycle.py)
    if resource is not None and resource.canonical == "/api/usage":
        return request.query.get("session_id") == session_id
    if resource is not None and resource.canonical == "/api/engines":
        if request.method == "GET":
            return request.query.get("session_id") == session_id
        if request.method == "POST":
            try:  # decoded once: the handler gets this same value (api/util.read_json)
                return (await read_json(request, EngineCreate)).session_id == session_id
            except BusError:
                # A body the handler will refuse anyway: judged by its session_id alone, as
                # ever (a token of that session then hears from the handler what is wrong).
                return json_field(await request.read(), "session_id") == session_id
    return False


def response_headers(request: web.Request) -> dict[str, str]:
    """Headers the guard puts on this request's response, whatever it is (``prepare_response``);
    made on first use (most requests carry none: no CORS, rate limits off)."""
    extra = request.get(_HEADERS)
    if extra is None:
        extra = request[_HEADERS] = {}
    return extra


def charge(request: web.Request, guard: Guard, policy: str, key: str) -> None:
    """Take one from ``policy``'s bucket for ``key``; 429 when it is empty. The refusals that
    cost the client's IP (a bad Origin, failed authentication) charge where they
    happen, since they end the request there; everything that passes is charged by
    ``charge_request`` (a CORS preflight, answered before, is not charged: ``check_transport``)."""
    decision = guard.limiter.hit(policy, key)
    if decision is None:
        return
    # The most specific policy's headers win: a WebSocket handshake shows its own bucket.
    response_headers(request).update(decision.headers())
    if not decision.allowed:
        raise rate_limited(decision)


# -- the steps ---------------------------------------------------------------------------
#
# ``guarded`` runs them in this order, each one thing: transport -> authentication -> rate
# limit -> body -> scope -> stream caps. A request one of them refuses never reaches the next.
# One pass rather than six middlewares: each aiohttp middleware layer is a coroutine frame and
# a partial per request, and these steps are microseconds each (bench/README.md, "One pass
# through the guard").


class _Peer:
    """What a connection's peer is, worked out once per connection: the uid at the other end
    of a Unix socket (None over TCP), and the IP rate limits charge."""

    __slots__ = ("uid", "ip", "owner")

    def __init__(self, uid: int | None, ip: str) -> None:
        self.uid = uid
        self.ip = ip
        self.owner = Principal("owner", f"uid:{uid}") if uid is not None else None


_PEERS: weakref.WeakKeyDictionary[asyncio.BaseTransport, _Peer] = weakref.WeakKeyDictionary()


def _peer(request: web.Request) -> _Peer:
    transport = request.transport
    if transport is not None and (known := _PEERS.get(transport)) is not None:
        return known
    uid = peer_uid(request)
    peer = _Peer(uid, request.remote or "unknown")
    if transport is not None:
        _PEERS[transport] = peer
    return peer


def check_transport(request: web.Request, peer: _Peer, guard: Guard) -> web.StreamResponse | None:
    """Where the request comes from: a Unix socket peer of ours, or TCP with an allowed Host and
    Origin. A CORS preflight is answered here (returned), without credentials."""
    if peer.uid is not None:
        if peer.uid not in (os.getuid(), 0):
            log.warning("refused a Unix socket peer with uid %s", peer.uid)
            raise forbidden("this daemon belongs to another user")
        return None
    host = target_host(request.raw_path, request.headers.get(hdrs.HOST))
    if not guard.hosts.allows(host):
        raise forbidden(
            "Host not allowed (add it to security.allowed_hosts if it is yours)",
            host=(host or "")[:128],
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return None
    if not guard.origins.allows(origin, host):
        charge(request, guard, "anonymous", peer.ip)
        raise forbidden(
            "Origin not allowed (add it to security.cors_origins if it is yours)",
            origin=origin[:128],
        )
    if guard.origins.is_listed(origin):
        response_headers(request).update(guard.origins.cors_headers(origin))
    if request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
        # Not charged: a preflight carries no credential, reads nothing and costs less than a
        # 429 would, while a refused one fails the page's request as an unreadable CORS error.
        # Browsers cache preflights per URL, so a page paging or polling with its key (one
        # preflight per distinct URL) would meet the IP's anonymous limit long before its
        # key's. The request it announces is charged when it comes, and its 429 is readable.
        # Listing every method we serve is harmless: the actual request is checked again.
        return web.Response(status=204, headers=guard.origins.preflight_headers(origin, PREFLIGHT_METHODS))
    return None


async def _authenticate_tcp(request: web.Request, peer: _Peer, guard: Guard) -> Principal | None:
    """The TCP request's principal; None on an open path without a (valid) credential."""
    try:
        presented = presented_credential(request)
        if presented is None:
            if is_open(request.path):
                return None
            raise unauthorized(
                f"missing credential: send `Authorization: Bearer <key>` (or `{SESSION_TOKEN_HEADER}`)",
                invalid=False,
            )
        credentials = guard.credentials
        assert credentials is not None, "security_ctx has not run"
        try:
            return credentials.verify(presented)
        except AuthFailure as exc:
            failure = exc
        # In a cluster the credential may be one another node made a moment ago.
        if await credentials.sync_on_miss(presented):
            try:
                return credentials.verify(presented)
            except AuthFailure as exc:
                failure = exc
        if is_open(request.path):
            # An open page needs no credential, so a wrong one is ignored rather than refused:
            # a client holding another daemon's key can still see this one is up.
            return None
        raise unauthorized(str(failure), invalid=True) from None
    except ApiError as exc:
        # Failed authentication costs the IP: brute force meets 429 soon.
        if exc.code == ErrorCode.UNAUTHORIZED:
            charge(request, guard, "anonymous", peer.ip)
        raise


async def authenticate(request: web.Request, peer: _Peer, guard: Guard) -> Principal | None:
    """Who is asking: the socket's owner on the Unix socket, else the credential presented
    (also kept as request[PRINCIPAL]; None for an open path reached without one)."""
    principal = peer.owner if peer.owner is not None else await _authenticate_tcp(request, peer, guard)
    if principal is not None:
        request[PRINCIPAL] = principal
    return principal


def request_bucket(principal: Principal | None, peer: _Peer, guard: Guard) -> tuple[str, str] | None:
    """The bucket a request, or a message on a WebSocket, takes from: the principal's (the
    session's, for its tokens), the IP's without one; None for the owner on the Unix socket
    (not limited, docs/security.md: it is the daemon's own user, who could raise any limit)
    unless ``rate_limits.unix_socket``. The one rule for both, so a WebSocket is no way around
    the rate limit and the owner's scripts are not limited on one but not the other."""
    if principal is None:
        return "anonymous", peer.ip
    if peer.uid is not None and not guard.settings.rate_limit_unix_socket:
        return None
    return "key", rate_key(principal)


def charge_request(request: web.Request, principal: Principal | None, peer: _Peer, guard: Guard) -> None:
    """Charge what passed (``request_bucket``); a TCP WebSocket handshake also takes from the
    websocket bucket of its IP and credential (the session, for its tokens): keyed by the IP
    alone, one session token's holder opening ten a minute refused every other client on its
    address (on a loopback daemon: every TCP client) any WebSocket."""
    bucket = request_bucket(principal, peer, guard)
    if bucket is not None:
        charge(request, guard, *bucket)
    if peer.uid is None and is_websocket(request):
        charge(request, guard, "websocket", peer.ip if principal is None else f"{peer.ip} {rate_key(principal)}")


def charge_message(request: web.Request) -> ApiError | None:
    """A message a WebSocket's client sends costs what a request does, from the same bucket (a
    WebSocket is no way around the rate limit: a subscribe message makes the daemon replay from
    the store); the refusal to answer with, None when it may go on."""
    guard = request.app[GUARD]
    bucket = request_bucket(request.get(PRINCIPAL), _peer(request), guard)
    if bucket is None:
        return None
    decision = guard.limiter.hit(*bucket)
    return rate_limited(decision) if decision is not None and not decision.allowed else None


async def check_scope(request: web.Request, principal: Principal | None) -> None:
    """Valid path identifiers; a session token stays inside its session and registers code only
    with ``sandbox.session_token_registration``."""
    check_identifiers(request)
    if principal is None or principal.session_id is None or request.match_info.http_exception is not None:
        return  # (no route: the token's holder hears 404 or 405 as anyone would, not 403)
    if (
        request.path not in ANY_SCOPE_PATHS
        and not is_open(request.path)
        and not await in_session_scope(request, principal.session_id)
    ):
        raise forbidden(
            "this session token only opens its own session's endpoints and engines",
            session_id=principal.session_id,
        )
    if takes_code(request.match_info.handler) and not request.app[GUARD].settings.session_token_registration:
        # Session tokens are handed to browsers and other less trusted clients: running
        # code of their own is the owner's call (calling existing tools stays allowed).
        raise forbidden(
            "a session token may not register code (tools, handlers); use an API key, or "
            "set sandbox.session_token_registration = true to allow it",
            setting="sandbox.session_token_registration",
        )


async def with_stream_caps(request: web.Request, principal: Principal | None, handler: Handler) -> web.StreamResponse:
    """WebSockets and event streams (SSE) alike hold a connection for as long as they run: both
    count against ``max_websockets`` and ``max_websockets_per_credential``."""
    guard = request.app[GUARD]
    limits = guard.settings.limits
    maximum = limits.max_websockets
    if maximum and guard.open_websockets >= maximum:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            f"limit reached: at most {maximum} open WebSockets and event streams (security.limits.max_websockets)",
            {"limit": "max_websockets", "max": maximum},
        )
    holder = websocket_holder(principal)
    per_holder = limits.max_websockets_per_credential
    held = guard.websockets_by_holder.get(holder, 0) if holder is not None else 0
    if holder is not None and per_holder and held >= per_holder:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            f"limit reached: at most {per_holder} open WebSockets and event streams per credential "
            "(per session for session tokens) (security.limits.max_websockets_per_credential)",
            {"limit": "max_websockets_per_credential", "max": per_holder},
        )
    # A WebSocket handler runs as long as its connection: counting handlers in flight
    # counts open WebSockets, with no race between the check and the upgrade.
    guard.open_websockets += 1
    if holder is not None:
        guard.websockets_by_holder[holder] = held + 1
    try:
        return await handler(request)
    finally:
        guard.open_websockets -= 1
        if holder is not None:
            left = guard.websockets_by_holder.get(holder, 1) - 1
            if left > 0:
                guard.websockets_by_holder[holder] = left
            else:
                guard.websockets_by_holder.pop(holder, None)


async def guarded(request: web.Request, handler: Handler, guard: Guard) -> web.StreamResponse:
    """The guard's steps in one pass (see above and the module docstring), then the handler.
    ``guard`` is the app's (request.app[GUARD]: the edge looks it up once per request)."""
    peer = _peer(request)
    preflight = check_transport(request, peer, guard)
    if preflight is not None:
        return preflight
    principal = await authenticate(request, peer, guard)
    charge_request(request, principal, peer, guard)
    if hdrs.EXPECT in request.headers:  # (a request without one pays this lookup only)
        check_expectation(request)  # an Expect other than 100-continue: 417, only now
    # The body arrives within ``server.read_timeout`` (408) and within the size limit (413),
    # before anything reads it; handlers then read it from memory.
    if request.body_exists:
        await read_body(request, guard.settings.read_timeout)
    await check_scope(request, principal)
    if _browser_stream(request):
        return await with_stream_caps(request, principal, handler)
    return await handler(request)


def websocket_holder(principal: Principal | None) -> str | None:
    """Whose share of max_websockets_per_credential a WebSocket takes: the API key's (or the
    secret's), the session's for session tokens (all of them together), nobody's for the
    owner on the Unix socket (the user themself; only max_websockets applies)."""
    if principal is None or principal.kind == "owner":
        return None
    return rate_key(principal)


def rate_key(principal: Principal) -> str:
    """The ``key`` bucket a principal takes from: its credential, except that all tokens of one
    session share the session's bucket (minting more tokens must not buy more requests)."""
    return f"session:{principal.session_id}" if principal.session_id is not None else principal.credential_id


# -- every response ----------------------------------------------------------------------


def prepare_response(request: web.Request, response: web.StreamResponse) -> None:
    """Before any response goes out (api/edge.py's prepare hook): the guard's headers, and a
    WebSocket's tracking, size limit and subprotocol."""
    extra = request.get(_HEADERS)
    if extra:
        for name, value in extra.items():
            if name not in response.headers or name == "Vary":
                response.headers[name] = value
    if not isinstance(response, web.WebSocketResponse):
        return
    app = request.app
    guard = app[GUARD]
    app[WEBSOCKETS].add(response)  # closed with 1001 on shutdown, whoever built it
    principal = request.get(PRINCIPAL)
    # Closed with 1008 when its credential dies; but a session's event stream opened with the
    # session's token ends by itself with the session (its SessionEnded, then 1000), as its SSE
    # stream does: closed here too, the token's end overtook that last event.
    if principal is not None and not (principal.session_id and getattr(response, "ends_with_session", False)):
        guard.sockets.track(principal, response)
    # Size limit for handlers that kept aiohttp's default; the reader is built after this hook.
    if getattr(response, "_max_msg_size", None) == _AIOHTTP_DEFAULT_MSG_SIZE:
        response._max_msg_size = guard.settings.max_ws_message_size
    # A browser that offered a token subprotocol fails the handshake unless one of its
    # offers is selected: select the plain "llmgine" one, never echo the token.
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    if hdrs.SEC_WEBSOCKET_PROTOCOL not in response.headers and WS_PROTOCOL in offered:
        response.headers[hdrs.SEC_WEBSOCKET_PROTOCOL] = WS_PROTOCOL


# -- start-up ----------------------------------------------------------------------------


async def security_ctx(app: web.Application) -> AsyncIterator[None]:
    """Mint the local CLI key, wire revocation to open WebSockets, follow the cluster's keys
    (the credentials were loaded when the store opened: app.py)."""
    settings = app[SETTINGS]
    bus = app[BUS]
    guard = app[GUARD]
    credentials = app[CREDENTIALS]  # loaded when the store opened (app.py)
    credentials.shared = bus.cluster.shared  # other nodes make and revoke keys too
    await credentials.ensure_local_key(settings.paths.local_key)
    credentials.on_revoked(guard.sockets.close_for)
    bus.sessions.hooks.append(credentials.session_ended)
    bus.sessions.ending.append(credentials.end_tokens)
    guard.credentials = credentials

    async def sweep_expired() -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
            close_expired(credentials, guard.sockets)

    async def follow_cluster() -> None:
        """Other nodes sharing the database make and revoke keys and end sessions too."""
        while True:
            await asyncio.sleep(SYNC_EVERY)
            try:
                await credentials.sync()
            except Exception as exc:  # the database away for a moment: try again next time
                log.warning("could not re-read keys and tokens: %s", exc)

    tasks = [asyncio.create_task(sweep_expired(), name="llmgine-expiry-sweep")]
    if credentials.shared:
        tasks.append(asyncio.create_task(follow_cluster(), name="llmgine-credentials-sync"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await credentials.flush()


def install(app: web.Application, settings: Settings) -> None:
    """The guard's state and start-up; its steps run from the edge (api/edge.py)."""
    install_filters()
    app[GUARD] = Guard.from_settings(settings)
    app.cleanup_ctx.append(security_ctx)
