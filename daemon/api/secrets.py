"""Secrets the daemon keeps for providers (``llmgine secret``): set, list (names only), delete.

    PUT    /api/secrets/{secret}   {"value": "..."}   -> 200 {name, updated_at}
    GET    /api/secrets                             -> {secrets: [{name, updated_at}], total}
    DELETE /api/secrets/{secret}                      -> 204

A value is never returned, logged or echoed in an error. Only the socket owner and API keys
reach these routes (a session token's scope is its session: 403 here). See daemon/secrets.py.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from llmgine_daemon.api.errors import ApiError
from llmgine_daemon.api.keys import SETTINGS
from llmgine_daemon.api.util import json_response, paged, read_json
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import ErrorCode, SecretInfo, SecretList, SecretSet
from llmgine_daemon.secrets import MAX_SECRETS, MAX_VALUE, NAME, VALUE, SecretStore, SecretsUnreadable

routes = web.RouteTableDef()
_STORES: dict[Path, SecretStore] = {}


def _store(request: web.Request) -> SecretStore:
    path = request.app[SETTINGS].paths.config_dir / "secrets.json"
    store = _STORES.get(path)
    if store is None:  # (not setdefault: a store made on every request, to be dropped)
        store = _STORES[path] = SecretStore(path)
    return store


def _unreadable(exc: SecretsUnreadable) -> ApiError:
    """409: the stored file must be repaired first (never written over: secrets.py)."""
    return ApiError(ErrorCode.CONFLICT, str(exc), {"reason": "secrets file unreadable"})


def _name(request: web.Request) -> str:
    name = request.match_info["secret"]
    if not NAME.match(name):
        raise invalid(
            "secret",  # the path parameter, as /openapi.json names it (and a 422 of every other path)
            "must be an environment variable's name: A-Z, 0-9 and _, not starting with a digit, at most 64 characters",
        )
    return name


@routes.put("/api/secrets/{secret}")
async def set_secret(request: web.Request) -> web.Response:
    body = await read_json(request, SecretSet)
    name = _name(request)
    if not VALUE.match(body.value):
        # The value itself is never part of an error.
        raise invalid("value", f"must be 1 to {MAX_VALUE} characters, no control characters")
    store = _store(request)
    try:
        if name not in dict(store.names()) and len(store.names()) >= MAX_SECRETS:
            raise ApiError(
                ErrorCode.LIMIT_REACHED,
                f"limit reached: at most {MAX_SECRETS} secrets",
                {"limit": "secrets", "max": MAX_SECRETS},
            )
        updated_at = store.set(name, body.value)
    except SecretsUnreadable as exc:
        raise _unreadable(exc) from None
    return json_response(SecretInfo(name=name, updated_at=updated_at))


@routes.get("/api/secrets")
async def list_secrets(request: web.Request) -> web.Response:
    try:
        items = [SecretInfo(name=n, updated_at=u) for n, u in _store(request).names()]
    except SecretsUnreadable as exc:
        raise _unreadable(exc) from None
    return json_response(paged(request, SecretList(secrets=items, total=len(items)), "secrets"))


@routes.delete("/api/secrets/{secret}")
async def delete_secret(request: web.Request) -> web.Response:
    name = _name(request)
    try:
        deleted = _store(request).delete(name)
    except SecretsUnreadable as exc:
        raise _unreadable(exc) from None
    if not deleted:
        raise ApiError(ErrorCode.NOT_FOUND, f"secret {name!r} not found", {"name": name})
    return web.Response(status=204)
