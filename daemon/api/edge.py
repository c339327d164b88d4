"""The edge: every request's one pass from aiohttp to its route handler and back.

One aiohttp middleware (``edge_middleware``) runs these steps in order, each a function of its
own in the module that owns the concern:

0. ``util.settle_query``: a repeated query parameter is its last value (as FastAPI reads it);
1. ``errors.settle_request_id``: the client's ``X-Request-ID`` or a new one;
2. ``observability.begin_request``: the request span (continuing the client's
   ``traceparent``), the session and request ids bound for every log record below;
3. ``guard.guarded``: transport, credential, rate limits, body, scope, stream caps
   (api/guard.py), then the route handler;
4. ``errors.envelope_for``: whatever step 3 raised becomes the one error envelope (but a
   path no route serves that one does without its trailing slash: ``routing.slash_redirect``);
5. ``errors.stamp_response``: the request id and version headers;
6. ``observability.end_request``: metrics and the span, with the status the client got
   (499 when the client went away, 500 for anything that escaped).

One middleware rather than three nested ones: each aiohttp middleware layer is a coroutine
frame, a ``functools.partial`` and an ``await`` per request, and the steps themselves are a few
microseconds each (bench/README.md, "The edge as one pass"). For the same reason the headers
every response carries however it was made (the guard's RateLimit/CORS headers, a WebSocket's
set-up, the span's ``traceparent``) are stamped by one ``on_response_prepare`` hook,
``prepare_response``.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from llmgine_daemon.api import guard, observability, routing
from llmgine_daemon.api.errors import Handler, envelope_for, settle_request_id, stamp_prepared, stamp_response
from llmgine_daemon.api.keys import OBSERVABILITY, SHUTDOWN
from llmgine_daemon.api.util import settle_query


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The steps of the module docstring, in its order."""
    app = request.app  # a property: its per-app parts are looked up once, here
    settle_query(request)  # `?limit=1&limit=2` is 2, as FastAPI reads it
    request_id = settle_request_id(request)
    observed = observability.begin_request(request, request_id, app[OBSERVABILITY])
    status = 500
    try:
        try:
            response = await guard.guarded(request, handler, app[guard.GUARD])
        except Exception as exc:
            # /api/sessions/ -> 307 /api/sessions, as FastAPI does (api/routing.py)
            response = await routing.slash_redirect(request, exc) or envelope_for(request, request_id, exc)
        stamp_response(response, request_id)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect: every error status became an envelope
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        observability.end_request(observed, status)


async def prepare_response(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, just before its head is sent (aiohttp's ``on_response_prepare``).

    Once the daemon is stopping, every answer says ``Connection: close``: the requests it is
    finishing are answered, and their clients send nothing more on a connection the stop is
    about to close (a request sent on it after the answer got no answer at all, neither done
    nor refused: 32 of 32 closed-loop connections lost one at each stop)."""
    if request.app[SHUTDOWN].is_set() and not isinstance(response, web.WebSocketResponse):
        response.force_close()  # (aiohttp made the head before this hook: the header too)
        response.headers[hdrs.CONNECTION] = "close"
    guard.prepare_response(request, response)
    observability.stamp_traceparent(request, response)
    stamp_prepared(request, response)


MIDDLEWARES = (edge_middleware,)
