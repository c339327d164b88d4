"""Credentials over the API: API keys (``/api/auth/keys``) and session tokens.

    POST   /api/auth/keys                {name?, expires_in? | expires_at?} -> 201 ApiKeyCreated
    GET    /api/auth/keys                -> ApiKeyList (every key: active, expired, revoked)
    GET    /api/auth/keys/{key_id}       -> ApiKeyInfo
    DELETE /api/auth/keys/{key_id}       -> ApiKeyInfo (revoked; idempotent)
    POST   /api/sessions/{session_id}/token -> 201 SessionTokenCreated

A key is shown once, in the 201 answer; only its hash is kept. Managing keys needs full
access (the socket owner, API_KEY_SECRET or an API key); a session token gets 403 here, as
everywhere outside its session. Who may connect at all is decided in api/guard.py.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from llmgine_daemon.api.keys import CREDENTIALS, SETTINGS
from llmgine_daemon.api.util import json_response, paged, path_id, read_json
from llmgine_daemon.bus.auth import KeyRecord
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    SessionTokenCreated,
    now_iso,
    parse_iso,
    to_iso,
)

routes = web.RouteTableDef()

MAX_NAME = 100
# Ten years: anything longer is a typo, or should have no expiry at all.
MAX_LIFETIME = 10 * 366 * 86400


def key_info(record: KeyRecord) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=record.key_id,
        name=record.name,
        prefix=record.prefix,
        kind=record.kind,
        state=record.state(now_iso()),
        created_at=record.created_at,
        last_used_at=record.last_used,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def _expiry(body: ApiKeyCreate) -> str | None:
    if body.expires_in is not None and body.expires_at is not None:
        raise invalid("expires_in", "give expires_in or expires_at, not both")
    now = dt.datetime.now(dt.UTC)
    if body.expires_in is not None:
        if not 0 < body.expires_in <= MAX_LIFETIME:
            raise invalid("expires_in", f"must be from 1 to {MAX_LIFETIME} seconds", value=body.expires_in)
        return to_iso(now + dt.timedelta(seconds=body.expires_in))
    if body.expires_at is not None:
        try:
            when = parse_iso(body.expires_at)
        except ValueError:
            raise invalid("expires_at", "not an ISO 8601 time", value=body.expires_at[:64]) from None
        if when <= now:
            raise invalid("expires_at", "must be in the future", value=body.expires_at)
        return to_iso(when)
    return None


@routes.post("/api/auth/keys")
async def create_key(request: web.Request) -> web.Response:
    body = await read_json(request, ApiKeyCreate, empty_ok=True)
    name = body.name.strip() if body.name else None
    if name is not None and (len(name) > MAX_NAME or not name.isprintable()):
        raise invalid("name", f"must be printable and at most {MAX_NAME} characters")
    record, key = await request.app[CREDENTIALS].create_key(name or None, _expiry(body))
    return json_response(
        ApiKeyCreated(
            key_id=record.key_id,
            name=record.name,
            prefix=record.prefix,
            created_at=record.created_at,
            expires_at=record.expires_at,
            key=key,
        ),
        status=201,
        # The one response that carries a key must not be stored anywhere on the way.
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/api/auth/keys")
async def list_keys(request: web.Request) -> web.Response:
    keys = [key_info(r) for r in request.app[CREDENTIALS].list_keys()]
    return json_response(paged(request, ApiKeyList(keys=keys, total=len(keys)), "keys"))


@routes.get("/api/auth/keys/{key_id}")
async def get_key(request: web.Request) -> web.Response:
    key_id = path_id(request, "key_id")
    return json_response(key_info(request.app[CREDENTIALS].get_key(key_id)))


@routes.delete("/api/auth/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    key_id = path_id(request, "key_id")
    return json_response(key_info(await request.app[CREDENTIALS].revoke_key(key_id)))


@routes.post("/api/sessions/{session_id}/token")
async def mint_session_token(request: web.Request) -> web.Response:
    session_id = path_id(request, "session_id")
    maximum = request.app[SETTINGS].limits.max_tokens_per_session
    record, token = await request.app[CREDENTIALS].mint_session_token(session_id, maximum)
    return json_response(
        SessionTokenCreated(session_id=session_id, session_token=token, created_at=record.created_at),
        status=201,
        headers={"Cache-Control": "no-store"},
    )
