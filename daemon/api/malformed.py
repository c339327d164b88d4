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
an ``EnvelopingHandler``: a subclass that only overrides ``handle_error`` (aiohttp's hook for
these answers). aiohttp and its parser are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from llmgine_daemon.api.errors import error_response, stamp_response
from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.protocol import ErrorCode

log = logging.getLogger("llmgine.api")


def _issue(exc: BaseException | None, message: str | None) -> str:
    """What the parser said, on one line and short (it may quote the client's bytes)."""
    text = str(getattr(exc, "message", "") or message or exc or "malformed request")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "malformed request")
    return first[:200]


class EnvelopingHandler(RequestHandler):
    """aiohttp's protocol, answering what its parser refuses with the envelope."""

    __slots__ = ()  # the same layout as RequestHandler: an instance's class can be switched

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is half sent: aiohttp breaks the connection
            return super().handle_error(request, status, exc, message)
        request_id = new_id()
        if status >= 500:
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
            response = error_response(
                request_id, ErrorCode.VALIDATION_ERROR, "malformed HTTP request", {"issue": issue}, status=status
            )
        stamp_response(response, request_id)
        response.force_close()
        return response


def enveloping(factory: Callable[[], Any]) -> Callable[[], Any]:
    """aiohttp's protocol factory (a ``web.Server``), its protocols answering with envelopes.

    The server makes a ``RequestHandler`` (with the options it was given); its class becomes
    ``EnvelopingHandler``, which only overrides ``handle_error``."""

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
