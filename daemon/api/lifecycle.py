"""Commands across sessions: waiting for any of them, and the live queue view.

    POST /api/commands/wait   CommandWait -> 200 CommandWaitResult (held until done or timeout)
    GET  /api/commands        ?status=queued,executing,blocked&limit= -> QueueView

Both see every session with a key (or the socket owner); a session token sees only its own
session (``guard.in_session_scope`` lets these paths through; the routes narrow them here).
"""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import json_response, page_response, query_int, query_statuses, read_json
from llmgine_daemon.bus.commands.answers import wait_page
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import UNFINISHED_STATUSES, CommandWait, valid_id

routes = web.RouteTableDef()


def token_session(request: web.Request) -> str | None:
    """The session a session token is bound to (None: a key or the owner, every session)."""
    principal = request.get(PRINCIPAL)
    return principal.session_id if principal is not None else None


@routes.post("/api/commands/wait")
async def wait_commands(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, CommandWait)
    commands = request.app[BUS].commands
    states = await commands.waits.read(body.command_ids, body.batch_id, token_session(request))
    result = await commands.waits.wait(states, any_=body.any, statuses=body.status, timeout=body.timeout)
    # The whole records, read again (part by part when long: bus/commands/answers.py).
    return await page_response(request, await wait_page(commands, result))


@routes.get("/api/commands")
async def list_queue(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    statuses = query_statuses(request, UNFINISHED_STATUSES)
    session_id = request.query.get("session_id") or None
    if session_id is not None and not valid_id(session_id):
        raise invalid("session_id", "not a valid id", value=session_id[:64])
    scope = token_session(request)
    if scope is not None:
        session_id = scope
    return json_response(
        await request.app[BUS].commands.queue.view(statuses=statuses, limit=limit, session_id=session_id)
    )
