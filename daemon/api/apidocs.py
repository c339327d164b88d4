"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc): the pages that render ``/openapi.json``
(api/openapi.py), served offline from the vendored files in ``api/static/`` (see its README).

The HTML shells and their assets (``/docs``, ``/redoc``, ``/docs/static/*``) hold no data and
need no credential (``guard.OPEN_PATHS``). Over TCP the page asks for a key (or takes one from
the URL fragment ``#token=...``, which never reaches the server or its logs) and fetches the
document with it (static/docs.js).
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web
from llmgine_daemon import __version__

routes = web.RouteTableDef()

STATIC = "static"
# Only these files are served; name → content type.
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "application/javascript",
    "docs.js": "application/javascript",
    "favicon-32x32.png": "image/png",
}
# The pages run only our own scripts (no inline script); the document is fetched from this
# origin. Both viewers inline styles; ReDoc renders in a blob: worker and compiles JSON Schema
# validators with new Function (Ajv), so its page also needs 'unsafe-eval'.
_CSP = (
    "default-src 'none'; script-src 'self'{eval}; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def page_headers(viewer: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": _CSP.format(eval=" 'unsafe-eval'" if viewer == "redoc" else ""),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


@functools.cache
def _asset(name: str) -> bytes:
    return (resources.files("llmgine_daemon.api") / STATIC / name).read_bytes()


def _page(viewer: str, title: str) -> str:
    head = '<link rel="stylesheet" href="/docs/static/swagger-ui.css">' if viewer == "swagger" else ""
    script = "swagger-ui-bundle.js" if viewer == "swagger" else "redoc.standalone.js"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · llmgine {__version__}</title>
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
{head}
</head>
<body>
<div id="llmgine-auth" hidden>
  <form>
    <label>This daemon needs a credential over TCP.
      API key or session token: <input type="password" name="token" autocomplete="off"></label>
    <button type="submit">Open</button> <span id="llmgine-auth-error"></span>
  </form>
</div>
<div id="viewer" data-viewer="{viewer}" data-spec="/openapi.json"></div>
<script src="/docs/static/{script}"></script>
<script src="/docs/static/docs.js"></script>
</body>
</html>
"""


@routes.get("/docs")
async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(
        text=_page("swagger", "API reference"), content_type="text/html", headers=page_headers("swagger")
    )


@routes.get("/redoc")
async def redoc(request: web.Request) -> web.Response:
    return web.Response(text=_page("redoc", "API reference"), content_type="text/html", headers=page_headers("redoc"))


@routes.get("/docs/static/{asset}")
async def static_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=_asset(name),
        content_type=content_type,
        headers={
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{__version__}-{name}"',
        },
    )
