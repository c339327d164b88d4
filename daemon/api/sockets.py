"""Which WebSockets and event streams (SSE) each credential holds open, so that revoking a key,
its expiry or the end of a session's tokens closes them: WebSockets with close code 1008, event
streams with ``stream.end`` code 1008 (their subscription is stopped). The guard tracks every
WebSocket (api/guard.py ``prepare_response``); api/streams.py registers an API key's event
streams."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aiohttp import WSCloseCode, web
from llmgine_daemon.api.wsmask import UNMASKED, FrameHeads, MaskedOnly
from llmgine_daemon.bus.auth import Credentials, Principal
from llmgine_daemon.bus.streams import Subscription
from llmgine_daemon.protocol import now_iso
from llmgine_daemon.protocol.streams import End


class Socket(web.WebSocketResponse):
    """A WebSocket whose close for a message over the size limit says why: aiohttp closes it
    with 1009 and no reason, which a browser's CloseEvent shows as an empty ``reason``.

    ``ends_with_session``: a session's event stream, which ends by itself when its session
    does; opened with that session's token, the token's end does not close it (api/guard.py).

    Its client's frames must be masked (RFC 6455 5.1): the first unmasked one closes it with
    1002 (api/wsmask.py). aiohttp's ``_post_start`` hands the connection its frame reader, and
    with it the bytes sent right after the handshake; they are checked first, then every
    later chunk before the reader gets it."""

    ends_with_session = False
    masked_only: MaskedOnly | None = None

    def __init__(self, *, max_msg_size: int, **kwargs: Any) -> None:
        # ``max_msg_size`` is the largest message a client may send, as its close reason says:
        # aiohttp refuses an uncompressed message of exactly its limit (``>=``), so it is
        # given one byte more. (Streams negotiate no compression: api/streams.py.)
        self.limit = max_msg_size
        super().__init__(max_msg_size=max_msg_size + 1, **kwargs)

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        handler, frames = request.protocol, FrameHeads()
        tail = bytes(handler._message_tail)
        bad = frames.unmasked(tail) if tail else None
        if bad is not None:
            handler._message_tail = tail[:bad]
        super()._post_start(request, protocol, writer)
        self.masked_only = handler._payload_parser = MaskedOnly(handler._payload_parser, self._reader, frames)
        if bad is not None:
            self.masked_only.refuse()

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = f"message too big: at most {self.limit} bytes".encode()
        elif code == WSCloseCode.PROTOCOL_ERROR and not message and self.masked_only and self.masked_only.refused:
            message = UNMASKED.encode()
        return await super().close(code=code, message=message, drain=drain)


class SocketRegistry:
    """Open WebSockets and event streams (SSE), by the credential that opened them (weakly)."""

    def __init__(self) -> None:
        self.by_credential: dict[str, weakref.WeakSet[web.WebSocketResponse | Subscription]] = {}

    def track(self, principal: Principal, stream: web.WebSocketResponse | Subscription) -> None:
        self.by_credential.setdefault(principal.credential_id, weakref.WeakSet()).add(stream)

    def close_for(self, credential_ids: list[str], reason: str = "credential revoked") -> None:
        """Close (1008 policy violation) every WebSocket and event stream of these credentials."""
        for credential_id in credential_ids:
            streams = self.by_credential.pop(credential_id, None)
            for stream in list(streams or ()):
                if stream.closed:
                    continue
                if isinstance(stream, Subscription):
                    stream.stop(End(code=WSCloseCode.POLICY_VIOLATION, reason=reason))
                else:
                    asyncio.get_running_loop().create_task(
                        stream.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())
                    )

    def credentials(self) -> list[str]:
        return [c for c, socks in self.by_credential.items() if any(not s.closed for s in socks)]


def close_expired(credentials: Credentials, sockets: SocketRegistry) -> list[str]:
    """Close the WebSockets and event streams whose key expired while they were open; returns
    those key ids."""
    now = now_iso()
    expired = [c for c in sockets.credentials() if c in credentials.keys and credentials.keys[c].state(now) != "active"]
    sockets.close_for(expired, "credential expired")
    return expired
