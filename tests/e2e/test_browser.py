"""The real llmgined on TCP, in real headless Chromium (tests/chromium.py, over the DevTools
protocol): /docs and /redoc render the whole API with a key from ``#token=``, the browser
examples of docs/security.md and docs/streams.md receive live events with a session token, and
a page of another origin pages through events past the IP's anonymous rate limit (preflights).

Screenshots of every page go to the test's temp dir (``--basetemp DIR`` to keep them
somewhere known); a failing wait reports the page's console errors.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chromium import Chromium, DevTools, Page
from tests.clitools import Daemon, cleanup_home, free_port, short_home, start_daemon, stop_process

# One worker runs this module, so its browser and daemon are started once, not once per test
# (tests/scheduling.py).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("tests/e2e/test_browser.py"),
    pytest.mark.sqlite_only(reason="the pages and their live events; storage is the API and stream suites'"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs"

# What each viewer shows per operation: Swagger UI one .opblock, ReDoc one section whose id
# names the operation ("tag/<tag>/operation/<operationId>").
RENDERED_OPERATIONS = {
    "/docs": "document.querySelectorAll('#viewer .opblock').length",
    "/redoc": "document.querySelectorAll('#viewer [data-section-id*=\"/operation/\"]').length",
}

# ReDoc's sidebar credit ("API docs by Redocly") always loads its logo from this CDN
# (redoc.standalone.js, unconditionally); the pages' CSP (img-src 'self' data:) blocks it and
# ReDoc hides the image. That blocked request is the one error the /redoc page may log.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


# -- a second origin, listed in CORS_ORIGINS, whose page runs the documented examples --------

EXAMPLE_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llmgine live events example</title>
<style>body { font: 14px sans-serif; margin: 2em; } pre { white-space: pre-wrap; font-size: 12px; }
h2 { font-size: 15px; margin: 1.2em 0 0.2em; }</style></head>
<body><h1>Live events from llmgine, in the browser</h1><div id="out">waiting...</div></body></html>
"""


class _ExamplePage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(EXAMPLE_PAGE)))
        self.end_headers()
        self.wfile.write(EXAMPLE_PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ExamplePage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def daemon(page_origin: str) -> Iterator[Daemon]:
    home = short_home()
    try:
        running = start_daemon(home, port=free_port(), env={"CORS_ORIGINS": page_origin})
        try:
            yield running
        finally:
            stop_process(running.proc)
    finally:
        cleanup_home(home)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium.start(tmp_path_factory.mktemp("chromium"))
    try:
        yield browser
    finally:
        browser.stop()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    devtools = await DevTools.connect(chromium)
    try:
        tab = await devtools.new_page()
        try:
            yield tab
        finally:
            await tab.close()
    finally:
        await devtools.close()


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    """HTTP to the daemon with the local CLI key (as `llmgine` over TCP)."""
    key = (daemon.home / "config" / "local.key").read_text().strip()
    async with aiohttp.ClientSession(daemon.tcp_url, headers={"Authorization": f"Bearer {key}"}) as session:
        yield session


async def create_key(api: aiohttp.ClientSession) -> str:
    """A user API key, as `llmgine auth key create` makes one."""
    async with api.post("/api/auth/keys", json={"name": "browser"}) as resp:
        assert resp.status == 201, await resp.text()
        return (await resp.json())["key"]


# -- /docs and /redoc ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_page_renders_the_api(
    page: Page, daemon: Daemon, api: aiohttp.ClientSession, screenshots: Path, path: str
) -> None:
    key = await create_key(api)
    async with api.get("/openapi.json") as resp:
        document = await resp.json()
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    assert len(operations) > 40

    await page.goto(f"{daemon.tcp_url}{path}#token={key}")
    count = RENDERED_OPERATIONS[path]
    await page.wait_for(f"{count} >= {len(operations)}")
    assert await page.evaluate(count) == len(operations)
    shown = await page.evaluate("document.getElementById('viewer').innerText")
    missing = [op["summary"] for op in operations if op["summary"] not in shown]
    assert not missing, f"{path} does not show these operations: {missing}"
    # docs.js took the key out of the address bar, kept it for this tab, and never asked.
    assert await page.evaluate("window.location.hash") == ""
    assert await page.evaluate("sessionStorage.getItem('llmgine-docs-token')") == key
    assert await page.evaluate("document.getElementById('llmgine-auth').hidden") is True
    await page.screenshot(screenshots / f"{path.strip('/')}.png")
    # Offline: every request the page made went to the daemon, or was blocked by its CSP.
    origin = daemon.tcp_url + "/"
    offsite = {
        url: page.failed.get(rid)
        for rid, url in page.requests.items()
        if not url.startswith((origin, "data:", "blob:"))
    }
    assert offsite == ({REDOC_LOGO: "csp"} if path == "/redoc" else {}), offsite
    errors = [e for e in page.errors if not (path == "/redoc" and f"'{REDOC_LOGO}'" in e and "Content Security" in e)]
    assert errors == [], page.errors


async def test_redoc_asks_for_a_credential_and_takes_a_session_token(
    page: Page, daemon: Daemon, api: aiohttp.ClientSession, screenshots: Path
) -> None:
    """Without #token= the page asks (docs.js's form); a wrong credential is refused and it
    asks again; a session token opens the document (security.md: any valid credential)."""
    async with api.post("/api/sessions", json={"name": "docs"}) as resp:
        token = (await resp.json())["session_token"]
    await page.goto(f"{daemon.tcp_url}/redoc")
    await page.wait_for("!document.getElementById('llmgine-auth').hidden")
    assert await page.evaluate(RENDERED_OPERATIONS["/redoc"]) == 0
    submit = """((value) => {
      const form = document.querySelector('#llmgine-auth form');
      form.elements.token.value = value;
      form.requestSubmit();
      return true;
    })(%s)"""
    await page.evaluate(submit % json.dumps(token + "x"))
    await page.wait_for("document.getElementById('llmgine-auth-error').textContent.includes('HTTP 401')")
    assert await page.evaluate("sessionStorage.getItem('llmgine-docs-token')") is None
    await page.screenshot(screenshots / "redoc-refused.png")
    await page.evaluate(submit % json.dumps(token))
    await page.wait_for(f"{RENDERED_OPERATIONS['/redoc']} > 40")
    assert await page.evaluate("document.getElementById('llmgine-auth').hidden") is True
    assert await page.evaluate("sessionStorage.getItem('llmgine-docs-token')") == token
    await page.screenshot(screenshots / "redoc-session-token.png")
    # The two refusals (no credential, a wrong one) are the page's only errors, and ReDoc's
    # CDN logo blocked by the CSP.
    refused = [e for e in page.errors if "/openapi.json" in e and "401" in e]
    assert len(refused) == 2, page.errors
    assert [e for e in page.errors if e not in refused and f"'{REDOC_LOGO}'" not in e] == []


# -- live events in the browser, with a session token ------------------------------------

EVENT_TYPE = "BrowserPing"

# Run in the page before the documented snippets: records what every WebSocket and
# EventSource the snippets open sees (the snippets keep no handle on them), and what they log.
# This wraps the browser's own classes; the daemon and the snippets run unchanged.
INSTRUMENT = """
window.streams = [];
window.logged = [];
const nativeLog = console.log;
console.log = (...args) => { window.logged.push(args); nativeLog(...args); };
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    const entry = {kind: "WebSocket", offered: protocols, opened: false, protocol: null,
                   messages: [], close: null};
    window.streams.push(entry);
    this.addEventListener("open", () => { entry.opened = true; entry.protocol = this.protocol; });
    this.addEventListener("message", (e) => entry.messages.push(JSON.parse(e.data)));
    this.addEventListener("close", (e) => { entry.close = e.code; });
  }
};
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url) {
    super(url);
    const entry = {kind: "EventSource", opened: false, messages: [], close: null};
    window.streams.push(entry);
    this.addEventListener("open", () => { entry.opened = true; });
    for (const name of ["stream.hello", "stream.live", "stream.end", "%(event_type)s", "SessionEnded"]) {
      this.addEventListener(name, (e) => {
        const msg = JSON.parse(e.data);
        entry.messages.push(name.startsWith("stream.") ? msg : {type: "event", event: msg});
        if (name === "stream.end") { entry.close = msg.code; this.close(); }  // as streams.md says
      });
    }
  }
};
"""

# What the page shows for the screenshot: each stream and the messages it received.
RENDER = """
(() => {
  const out = document.getElementById("out");
  out.textContent = "";
  for (const s of window.streams) {
    const h = document.createElement("h2");
    const offered = (s.offered || []).map((p) => p.replace(/^(llmgine\\.bearer\\.lgs_\\w{12}_).*/, "$1…"));
    h.textContent = `${s.kind} offered ${JSON.stringify(offered)}: selected ${JSON.stringify(s.protocol)},`
      + ` opened ${s.opened}, closed ${s.close}`;
    const pre = document.createElement("pre");
    pre.textContent = s.messages.map((m) => JSON.stringify(m)).join("\\n");
    out.append(h, pre);
  }
  const h = document.createElement("h2");
  h.textContent = "console.log of the streams.md snippet";
  const pre = document.createElement("pre");
  pre.textContent = window.logged.map((args) => args.map((a) => JSON.stringify(a)).join(" ")).join("\\n");
  out.append(h, pre);
})()
"""


def js_block(doc: str, fence: str, must_contain: str) -> str:
    """The first fenced ``fence`` block of docs/<doc> that contains ``must_contain``."""
    text = (DOCS / doc).read_text()
    for block in re.findall(rf"```{fence}\n(.*?)```", text, re.S):
        if must_contain in block:
            return block
    raise AssertionError(f"no ```{fence} block with {must_contain!r} in docs/{doc}")


async def test_documented_browser_examples_receive_live_events(
    page: Page, page_origin: str, daemon: Daemon, api: aiohttp.ClientSession, screenshots: Path
) -> None:
    """docs/security.md's and docs/streams.md's browser snippets, run as written (but for the
    port) on a page of an allowed origin, get a live event published over HTTP with the session
    token; the daemon selects the documented subprotocol, and a wrong token gets nothing."""
    async with api.post("/api/sessions", json={"name": "browser"}) as resp:
        assert resp.status == 201
        session = await resp.json()
    sid, token = session["session_id"], session["session_token"]
    security = js_block("security.md", "js", "new WebSocket(")
    streams = js_block("streams.md", "javascript", "new WebSocket(")
    port = daemon.port
    assert port is not None
    script = "\n".join(
        [
            INSTRUMENT % {"event_type": EVENT_TYPE},
            f"const sid = {json.dumps(sid)}, sessionId = sid, sessionToken = {json.dumps(token)};",
            "// docs/security.md",
            security.replace("127.0.0.1:8000", f"127.0.0.1:{port}"),
            "// docs/streams.md",
            streams.replace("127.0.0.1:8000", f"127.0.0.1:{port}"),
            "// what older clients offer (the token first, then the generic name)",
            f"new WebSocket(`ws://127.0.0.1:{port}/api/sessions/${{sid}}/events/stream`,"
            ' [`llmgine.bearer.${sessionToken}`, "llmgine"]);',
            "// a wrong token: refused before the upgrade",
            f"new WebSocket(`ws://127.0.0.1:{port}/api/sessions/${{sid}}/events/stream`,"
            ' ["llmgine.events.v1", `llmgine.bearer.${sessionToken}x`]);',
            "true",
        ]
    )
    await page.goto(f"{page_origin}/")
    assert await page.evaluate(script) is True
    kinds = await page.evaluate("window.streams.map((s) => s.kind)")
    # security.md: a WebSocket and an EventSource; streams.md: a WebSocket; ours: two more.
    assert kinds == ["WebSocket", "EventSource", "WebSocket", "WebSocket", "WebSocket"]
    good, wrong = "window.streams.slice(0, 4)", "window.streams[4]"

    # Every good stream is open and has said hello; the wrong token never opened.
    await page.wait_for(f"{good}.every((s) => s.messages.length && s.messages[0].type === 'hello')")
    await page.wait_for(f"{wrong}.close !== null")
    assert await page.evaluate(f"{wrong}.opened") is False
    protocols = await page.evaluate("window.streams.map((s) => s.protocol)")
    assert protocols == ["llmgine.events.v1", None, "llmgine.events.v1", "llmgine", None]

    nonce = secrets.token_hex(8)
    async with aiohttp.ClientSession(daemon.tcp_url, headers={"X-Session-Token": token}) as as_session:
        async with as_session.post(
            f"/api/sessions/{sid}/events", json={"event_type": EVENT_TYPE, "data": {"nonce": nonce}}
        ) as resp:
            assert resp.status == 201, await resp.text()
            published = await resp.json()
    received = (
        f"{good}.every((s) => s.messages.some((m) => m.type === 'event'"
        f" && m.event.event_type === {json.dumps(EVENT_TYPE)} && m.event.data.nonce === {json.dumps(nonce)}))"
    )
    await page.wait_for(received)
    seqs = await page.evaluate(
        f"{good}.map((s) => s.messages.filter((m) => m.type === 'event').map((m) => m.event.seq))"
    )
    assert seqs == [[published["seq"]]] * 4  # exactly once each, nothing else
    logged = await page.evaluate("window.logged")
    assert [args[0] for args in logged] == ["Received event:"]
    assert logged[0][1]["seq"] == published["seq"] and logged[0][1]["data"] == {"nonce": nonce}

    # Ending the session ends every stream, its SessionEnded last. The EventSource gets
    # stream.end 1000 (streams.md); the WebSockets, opened with the session's token, close
    # with 1000 too (the token's end closed them with 1008, sometimes before SessionEnded).
    async with api.delete(f"/api/sessions/{sid}") as resp:
        assert resp.status == 200
    await page.wait_for(f"{good}.every((s) => s.close !== null)", show="window.streams")
    closes = await page.evaluate(f"{good}.map((s) => s.close)")
    assert closes == [1000] * 4, closes
    last = await page.evaluate(
        f"{good}.map((s) => s.messages.filter((m) => m.type === 'event').map((m) => m.event.event_type).pop())"
    )
    assert last == ["SessionEnded"] * 4
    assert len(await page.evaluate("window.streams")) == 5  # and nobody reconnected
    await page.evaluate(RENDER)
    await page.screenshot(screenshots / "live-events.png")
    # The token travelled in a subprotocol and a query string: the daemon logged neither.
    log = (daemon.home / "daemon-under-test.log").read_text()
    assert "listening on" in log  # it is the daemon's log
    assert token.split("_", 2)[-1] not in log
    # The only error in the page: the handshake refused to the wrong token.
    assert len(page.errors) == 1, page.errors
    assert "WebSocket connection to" in page.errors[0] and "failed" in page.errors[0], page.errors


async def test_a_page_paging_with_its_token_is_not_stopped_by_preflights(
    page: Page, page_origin: str, daemon: Daemon, api: aiohttp.ClientSession
) -> None:
    """Chromium caches a CORS preflight per URL, so a page that pages with a cursor sends one
    per page. Preflights carry no credential: were they charged to the IP's anonymous bucket
    (100/min), the page's 101st request would fail as an unreadable CORS error, though its
    token's bucket (1000/min) is nearly full."""
    async with api.post("/api/sessions", json={"name": "pager"}) as resp:
        session = await resp.json()
    await page.goto(f"{page_origin}/")
    script = """(async (base, sid, token) => {
      const statuses = {};
      for (let after = 0; after < 120; after++) {
        let status;
        try {
          const resp = await fetch(`${base}/api/sessions/${sid}/events?after=${after}`,
                                   {headers: {"X-Session-Token": token}});
          status = resp.status;
        } catch (e) {
          status = String(e);
        }
        statuses[status] = (statuses[status] || 0) + 1;
      }
      return statuses;
    })(%s, %s, %s)"""
    args = tuple(json.dumps(v) for v in (daemon.tcp_url, session["session_id"], session["session_token"]))
    assert await page.evaluate(script % args) == {"200": 120}, page.errors
