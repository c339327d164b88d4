"""Approval before a tool runs (bus/approvals.py): the pending requests of a session, and a
person's decision. A session token may decide for its own session."""

from __future__ import annotations

from aiohttp import web
from llmgine_daemon.api.guard import PRINCIPAL
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.api.util import json_response, paged, path_id, query_choice, read_json
from llmgine_daemon.protocol import APPROVAL_STATUSES, ApprovalDecision

routes = web.RouteTableDef()


@routes.get("/api/sessions/{session_id}/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    status = query_choice(request, "status", (*APPROVAL_STATUSES, "all")) or "pending"
    approvals = request.app[BUS].approvals
    listing = await approvals.list(path_id(request, "session_id"), None if status == "all" else status)
    return json_response(paged(request, listing, "approvals"))


@routes.post("/api/sessions/{session_id}/approvals/{approval_id}")
async def decide_approval(request: web.Request) -> web.Response:
    body = await read_json(request, ApprovalDecision)
    principal = request.get(PRINCIPAL)
    # Who decided, as the credential's kind and id (never the secret): key:ID, owner:UID...
    who = f"{principal.kind}:{principal.credential_id}" if principal is not None else "unknown"
    approval = await request.app[BUS].approvals.decide(
        path_id(request, "session_id"),
        path_id(request, "approval_id"),
        body.decision,
        body.reason,
        body.arguments,
        who,
    )
    return json_response(approval)
