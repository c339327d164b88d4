"""api/routing.py resolves by the path's shape; its answer must be aiohttp's for every path."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import MatchInfoError
from llmgine_daemon.api.routing import ShapeIndex
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import Settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
# Values a variable segment might be given: an id, and words that are literal segments
# elsewhere (a path id is refused by pattern where it would shadow one: "stream", "batch").
VALUES = ("01J0ABCDEF", "stream", "batch", "retry", "events", "x.json")


def answer(match_info: Any) -> tuple[Any, ...]:
    if isinstance(match_info, MatchInfoError):
        exc = match_info.http_exception
        return ("error", exc.status, sorted(getattr(exc, "allowed_methods", ()) or ()))
    return ("route", match_info.route, dict(match_info))


def paths(app: Any) -> set[str]:
    found = {"/", "/api", "/api/", "/api/sessions/", "/nowhere", "/docs/static/x.css", "/api/sessions/a/b/c/d/e/f"}
    for resource in app.router.resources():
        canonical = resource.canonical
        variables = canonical.count("{")
        for values in itertools.product(VALUES, repeat=min(variables, 2)):
            path = canonical
            for value in values + ("v",) * (variables - len(values)):
                start = path.index("{")
                path = path[:start] + value + path[path.index("}", start) + 1 :]
            found.add(path)
            found.add(path + "/")
    return found


async def test_shape_index_answers_as_aiohttp(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    router = app.router
    assert isinstance(getattr(router.resolve, "__self__", None), ShapeIndex)  # create_app installed it
    index = ShapeIndex(router)
    index.fallback = type(router).resolve.__get__(router)  # aiohttp's own, not the installed one
    # One mocked connection for every request (routing reads the method and the path only):
    # mocking one per request was 90% of this test's CPU.
    first = make_mocked_request("GET", "/", app=app)
    connection = {"protocol": first.protocol, "transport": first.transport, "writer": first.writer}
    checked = 0
    for path in sorted(paths(app)):
        for method in METHODS:
            request = make_mocked_request(method, path, app=app, **connection)
            assert answer(await index.resolve(request)) == answer(await index.fallback(request)), (method, path)
            checked += 1
    assert checked > 1000, checked
    # The busy routes are found by shape, not by the fallback.
    assert index.shapes[("", "api", "sessions", None, "commands")]
    assert index.shapes[("", "api", "sessions", None)]
