"""Spec section 2: commands (submit, batch, read, list, cancel), with ?wait / Prefer: wait and
Idempotency-Key.

Status codes: 202 while the work is queued or executing, 200 when the response carries the
finished record (because the client asked to wait and it finished in time).
"""

from __future__ import annotations

import re

from aiohttp import web
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.lifecycle import token_session
from llmgine_daemon.api.util import (
    idempotency_key,
    json_response,
    limit_offset,
    page_response,
    path_id,
    query_bool,
    query_statuses,
    read_json,
    replay_headers,
    wait_seconds,
)
from llmgine_daemon.bus.commands import Commands, CommandSpec, validate
from llmgine_daemon.bus.commands.retries import MAX_RERUN
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.idempotency import IdempotencyKey
from llmgine_daemon.protocol import (
    COMMAND_STATUSES,
    TERMINAL_STATUSES,
    BatchCreate,
    Command,
    CommandCreate,
    CommandList,
    CommandRetry,
    ErrorCode,
)

routes = web.RouteTableDef()

_MEMBER = re.compile(r"^commands\[(\d+)\]")


def _finished_status(done: bool) -> int:
    return 200 if done else 202


@routes.post("/api/sessions/{session_id}/commands/batch")
async def submit_batch(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request, "session_id")
    wait, prefer = wait_seconds(request)
    try:
        body = await read_json(request, BatchCreate)
    except BusError as exc:
        # Name the offending member's index, not just its path.
        match = _MEMBER.match(str(exc.details.get("field", "")))
        if exc.code == ErrorCode.VALIDATION_ERROR and match:
            exc.details["index"] = int(match.group(1))
        raise
    specs = [validate(cmd, prefix=f"commands[{i}].", index=i) for i, cmd in enumerate(body.commands)]
    commands = request.app[BUS].commands
    batch, replayed = await commands.submit_batch(
        session_id, specs, body.mode, body.stop_on_error, idempotency_key(request, body)
    )
    headers = replay_headers(replayed, prefer, wait)
    done = all(c.status in TERMINAL_STATUSES for c in batch.commands)
    if not (replayed or wait or done):
        return json_response(batch, status=202, headers=headers)  # as submitted: the body's size
    # Results (up to 1 MiB each, 10,000 commands): waited for on the commands' states, then
    # the batch is read and sent as GET .../batches/{id} sends it (part by part when long).
    batch_id = batch.batch_id
    del batch
    if not done and wait:
        states = await commands.batch_states(session_id, batch_id)
        done = await commands.wait(states, wait, states=True)
        del states
    page = await commands.get_batch(session_id, batch_id)
    return await page_response(request, page, status=_finished_status(done), headers=headers)


@routes.get("/api/sessions/{session_id}/batches/{batch_id}")
async def get_batch(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request, "session_id")
    batch_id = path_id(request, "batch_id")
    wait, prefer = wait_seconds(request)
    commands = request.app[BUS].commands
    if wait:  # on the commands' states; the batch is read (part by part when long) after
        states = await commands.batch_states(session_id, batch_id)
        if not all(c.status in TERMINAL_STATUSES for c in states):
            await commands.wait(states, wait, states=True)
    batch = await commands.get_batch(session_id, batch_id)
    return await page_response(request, batch, headers=replay_headers(False, prefer, wait))


@routes.post("/api/sessions/{session_id}/commands")
async def submit_command(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    wait, prefer = wait_seconds(request)
    body = await read_json(request, CommandCreate)
    spec = validate(body)
    spec.after_scope = token_session(request)  # a session token names its own session's commands only
    commands = request.app[BUS].commands
    record, replayed, done = await run_command(commands, session_id, spec, idempotency_key(request, body), wait)
    return json_response(record, status=_finished_status(done), headers=replay_headers(replayed, prefer, wait))


async def run_command(
    commands: Commands, session_id: str, spec: CommandSpec, idem: IdempotencyKey | None, wait: float
) -> tuple[Command, bool, bool]:
    """The route's work once the request is read (the fast lane's too: api/fastlane.py): the
    record, whether it was a replay, and whether it finished (within ``wait``)."""
    record, replayed = await commands.submit(session_id, spec, idem)
    done = await commands.wait([record], wait) if wait else record.status in TERMINAL_STATUSES
    return record, replayed, done


@routes.get("/api/sessions/{session_id}/commands")
async def list_commands(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request, "session_id")
    limit, offset = limit_offset(request)
    statuses = query_statuses(request, COMMAND_STATUSES)
    command_type = request.query.get("command_type") or None
    batch_id = request.query.get("batch_id") or None
    return await page_response(
        request,
        await request.app[BUS].commands.list(
            session_id,
            statuses=statuses,
            command_type=command_type,
            batch_id=batch_id,
            dead=query_bool(request, "dead"),
            limit=limit,
            offset=offset,
        ),
    )


# "batch" and "retry" are routes, not command ids (GET .../commands/batch is 405, not a lookup).
@routes.get("/api/sessions/{session_id}/commands/{command_id:(?!batch$|retry$)[^{}/]+}")
async def get_command(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    command_id = path_id(request, "command_id")
    wait, prefer = wait_seconds(request)
    commands = request.app[BUS].commands
    record = await commands.get(session_id, command_id)
    if wait and record.status not in TERMINAL_STATUSES:
        await commands.wait([record], wait)
        if record.status not in TERMINAL_STATUSES:
            # A record this node followed but another node moved on (a blocked command it
            # released, then ran): the wait saw the store's, this one may be left behind.
            record = await commands.get(session_id, command_id)
    return json_response(record, headers=replay_headers(False, prefer, wait))


@routes.post("/api/sessions/{session_id}/commands/{command_id}/cancel")
async def cancel_command(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    command_id = path_id(request, "command_id")
    return json_response(await request.app[BUS].commands.cancel(session_id, command_id))


@routes.post("/api/sessions/{session_id}/commands/retry")
async def retry_commands(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    body = await read_json(request, CommandRetry)
    if not body.command_ids and not (body.failed or body.dead):
        # Nothing asked for: nothing runs again; but a session that is not there is still 404.
        await request.app[BUS].sessions.get(session_id)
        return json_response(CommandList([], 0, MAX_RERUN, 0))
    retries = request.app[BUS].commands.retries
    return json_response(await retries.rerun(session_id, body.command_ids, failed=body.failed, dead=body.dead))
