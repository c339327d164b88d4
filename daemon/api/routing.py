"""Route resolution by the path's shape: the same answer as aiohttp's router, fewer tries.

aiohttp looks a path up by its prefixes and then tries, in registration order, every resource
indexed under the longest one that has any: under ``/api/sessions`` that is 27 dynamic
resources, each an awaited coroutine and a regex (about 1 us each), before it reaches, say,
``POST /api/sessions/{session_id}/commands``.

``ShapeIndex`` first masks the path into its *shape*: each segment kept when some route has it
as a literal segment, ``None`` otherwise (``/api/sessions/4f2a.../events`` becomes
``("", "api", "sessions", None, "events")``). For each shape it remembers, once, the resources
that could match such a path at all - a literal segment must be equal, a variable one takes
any single segment - in the order aiohttp would try them (longest index prefix first, then
registration order). A request then tries only those, directly; the first that matches the
path and has a route for the method answers. Anything else (no candidate matched, a 404, a
405 with its Allow list, a resource whose pattern may span segments such as the docs' static
files) goes to aiohttp's own resolution, unchanged. The answer is therefore always the one
aiohttp gives; only the work to find it differs (bench/README.md, "The edge as one pass").
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import ROUTE_RE, DynamicResource, MatchInfoError, PlainResource, UrlMappingMatchInfo
from yarl import URL

# A variable segment whose own pattern still stays inside one segment: aiohttp's default, or
# a negative lookahead in front of it ({event_id:(?!stream$)[^{}/]+}).
_ONE_SEGMENT = re.compile(r"^\{[_a-zA-Z][_a-zA-Z0-9]*(?::(?:\(\?![^()]*\))?\[\^\{\}/\]\+)?\}$")
# Shapes remembered at most (a client can make up paths of any shape; past this many, the
# unremembered ones go to aiohttp's resolution).
MAX_SHAPES = 4096

Shape = tuple[str | None, ...]


class ShapeIndex:
    """Installed as the router's ``resolve`` (``install``); built on the first request, when
    every route is registered."""

    def __init__(self, router: web.UrlDispatcher, expect_handler: Any = None) -> None:
        self.router = router
        self.aiohttp_resolve = router.resolve
        # The app's routes answer Expect with it (app.py); a 404 or 405 too, not aiohttp's
        # default (which says "100 Continue" before any check).
        self.expect_handler = expect_handler
        self.literals: frozenset[str] = frozenset()
        # (aiohttp's try order, the resource, its segments: a literal or None; None for a
        # resource that may match across segments, which sends its shapes to the fallback).
        self.resources: list[tuple[tuple[int, int], Any, Shape | None]] = []
        self.shapes: dict[Shape, tuple[Any, ...] | None] = {}
        self.built = False

    def build(self) -> None:
        literals: set[str] = set()
        for position, resource in enumerate(self.router.resources()):
            key = self.router._get_resource_index_key(resource)
            order = (-len(key), position)
            segments: Shape | None = None
            if isinstance(resource, PlainResource):
                segments = tuple(resource.canonical.split("/"))
            elif isinstance(resource, DynamicResource) and self._one_segment_variables(resource):
                segments = tuple(None if "{" in p else p for p in resource.canonical.split("/"))
            if segments is None:
                literals.update(key.split("/"))  # its prefix, so its shapes fall back
            else:
                literals.update(s for s in segments if s is not None)
            self.resources.append((order, resource, segments))
        self.resources.sort(key=lambda item: item[0])
        self.literals = frozenset(literals)
        self.built = True

    @staticmethod
    def _one_segment_variables(resource: DynamicResource) -> bool:
        """Whether each of the resource's variables stays inside one path segment."""
        variables = ROUTE_RE.findall(resource._orig_path)
        return len(variables) == resource.canonical.count("{") and all(_ONE_SEGMENT.match(v) for v in variables)

    def candidates(self, shape: Shape) -> tuple[Any, ...] | None:
        """The resources that could match a path of this shape, in aiohttp's order; None when
        one of them may match across segments (the fallback decides then)."""
        found = []
        for _, resource, segments in self.resources:
            if segments is None:
                prefix = self.router._get_resource_index_key(resource).split("/")
                if tuple(prefix) == shape[: len(prefix)]:
                    return None
                continue
            if len(segments) == len(shape) and all(s is None or s == p for s, p in zip(segments, shape, strict=True)):
                found.append(resource)
        return tuple(found)

    async def fallback(self, request: web.Request) -> Any:
        match = await self.aiohttp_resolve(request)
        if self.expect_handler is not None and isinstance(match, MatchInfoError):
            match.route._expect_handler = self.expect_handler  # a SystemRoute made for this answer
        return match

    async def resolve(self, request: web.Request) -> Any:
        if not self.built:
            self.build()
        path = request.rel_url.path_safe
        literals = self.literals
        shape = tuple([s if s in literals else None for s in path.split("/")])  # a list: no generator
        try:
            candidates = self.shapes[shape]
        except KeyError:
            if len(self.shapes) >= MAX_SHAPES:
                return await self.fallback(request)
            candidates = self.shapes[shape] = self.candidates(shape)
        if candidates:
            method = request.method
            for resource in candidates:
                match = resource._match(path)
                if match is not None and (route := resource._routes.get(method, resource._any_route)):
                    return UrlMappingMatchInfo(match, route)
        return await self.fallback(request)


async def slash_redirect(request: web.Request, exc: Exception) -> web.Response | None:
    """FastAPI's (Starlette's ``redirect_slashes``) answer to a path that no route serves but
    would without its trailing slash (``/api/sessions/``): 307 to that path, the query kept, so
    the method and body are sent again. None for anything else (the 404 stands)."""
    if not isinstance(exc, web.HTTPNotFound) or request.match_info.http_exception is None:
        return None  # a handler's own 404 (an unknown id) is an answer, not a missing route
    # The path as sent (%-escapes kept), never the scheme and host of an absolute-form target
    # (GET http://elsewhere/api/sessions/): the answer must not point off this daemon.
    path, query = request.rel_url.raw_path, request.rel_url.raw_query_string
    sep = "?" if query else ""
    stripped = path.rstrip("/")
    if not stripped or stripped == path or stripped.startswith("//"):
        return None  # (a Location of //host/... would name another host)
    # The router reads only the path and the method (a request whose body was read cannot be
    # cloned).
    probe: Any = SimpleNamespace(rel_url=URL(stripped, encoded=True), method=request.method)
    match = await request.app.router.resolve(probe)
    missing = match.http_exception
    if missing is not None and missing.status != 405:  # (405: served, by other methods)
        return None
    return web.Response(status=307, headers={"Location": stripped + sep + query})


def install(app: web.Application, expect_handler: Any = None) -> None:
    """Resolve the app's routes by shape (the router's own ``resolve`` stays the fallback);
    ``expect_handler`` answers Expect on a path no route matches (a 404, a 405)."""
    router = app.router
    router.resolve = ShapeIndex(router, expect_handler).resolve  # type: ignore[method-assign]
