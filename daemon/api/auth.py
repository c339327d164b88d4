"""Who may connect.

- Unix socket: the peer's uid (SO_PEERCRED) must be the daemon's own uid, or root.
- TCP: when ``security.api_key_secret`` is set, ``Authorization: Bearer <secret>`` is required,
  compared in constant time. ``/api/health`` is always open: it is the liveness probe.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import struct

from aiohttp import web
from llmgine_daemon.api.errors import ApiError, Handler
from llmgine_daemon.api.keys import SETTINGS
from llmgine_daemon.protocol import ErrorCode

log = logging.getLogger("llmgine.auth")

OPEN_PATHS = frozenset({"/api/health"})
_UCRED = struct.Struct("3i")


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of a Unix socket; None for TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(creds)
    return uid


def is_unix(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def unauthorized(message: str) -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": 'Bearer realm="llmgine"'}
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_unix(request):
        uid = peer_uid(request)
        if uid not in (os.getuid(), 0):
            log.warning("refused a Unix socket peer with uid %s", uid)
            raise ApiError(ErrorCode.FORBIDDEN, "this daemon belongs to another user")
        return await handler(request)
    if request.path in OPEN_PATHS:
        return await handler(request)
    secret = request.app[SETTINGS]["security.api_key_secret"]
    if secret:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing credential: send Authorization: Bearer <key>")
        if not hmac.compare_digest(token.strip().encode(), secret.encode()):
            raise unauthorized("invalid API key")
    return await handler(request)
