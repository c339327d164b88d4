"""Spec section 1: sessions."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL, forbidden
from llmgine_daemon.api.keys import BUS, CREDENTIALS
from llmgine_daemon.api.observability import SPAN
from llmgine_daemon.api.util import (
    json_response,
    limit_offset,
    path_id,
    query_bool,
    query_choice,
    read_json,
)
from llmgine_daemon.protocol import SessionCreate, SessionFork

routes = web.RouteTableDef()


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    body = await read_json(request, SessionCreate, empty_ok=True)
    # An addition to the spec: ?if_exists=reuse|error when an active session has the name
    # (default create: another session of that name, as the spec's endpoint does). Without a
    # name no session can have it: a session is created, whatever if_exists says.
    if_exists = query_choice(request, "if_exists", ("create", "reuse", "error")) or "create"
    # The session token is written in the same transaction as the session.
    token = request.app[CREDENTIALS].pending_session_token()
    session = await request.app[BUS].sessions.create(body.name, body.metadata, also=token.write, if_exists=if_exists)
    # The path had no session id yet; without this the trace would not list under the session.
    request[SPAN].set(session_id=session.session_id)
    if token.record is None:  # reused: nothing was written, no token minted (`session token`)
        return json_response(session)
    # Returned once, here: a credential for this session only (hand it to a browser page).
    session.session_token = token.publish()
    return json_response(session, status=201, headers={"Cache-Control": "no-store"})


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    limit, offset = limit_offset(request)
    status = query_choice(request, "status", ("active", "closed"))
    return json_response(await request.app[BUS].sessions.list(status, limit, offset))


@routes.get("/api/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    return json_response(await request.app[BUS].sessions.get(session_id))


@routes.delete("/api/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request, "session_id")
    sessions = request.app[BUS].sessions
    if query_bool(request, "purge"):
        await sessions.close(session_id)
        await sessions.purge(session_id)
        return web.Response(status=204)
    return json_response(await sessions.close(session_id))


@routes.post("/api/sessions/{session_id}/fork")
async def fork_session(request: web.Request) -> web.Response:
    """A new session where this one stood at ``at_seq`` (bus/fork.py). Not for session tokens:
    the fork is another session, outside the token's reach."""
    session_id = path_id(request, "session_id")
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.session_id is not None:
        raise forbidden("a session token may not fork its session; use an API key", session_id=session_id)
    body = await read_json(request, SessionFork, empty_ok=True)
    # An addition, as on create: ?if_exists=error refuses a name an active session has.
    if_exists = query_choice(request, "if_exists", ("create", "error")) or "create"
    token = request.app[CREDENTIALS].pending_session_token()
    fork = await request.app[BUS].forks.fork(session_id, body.at_seq, body.name, also=token.write, if_exists=if_exists)
    request[SPAN].set(forked_session_id=fork.session.session_id)
    fork.session.session_token = token.publish()
    return json_response(fork, status=201, headers={"Cache-Control": "no-store"})
