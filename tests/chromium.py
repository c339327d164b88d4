"""Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol with
aiohttp's WebSocket client (no extra dependency).

``Chromium.start(tmp)`` launches the real browser in a process group of its own, with a
profile under ``tmp``; ``stop()`` ends that group (SIGTERM, then SIGKILL), so a failing test
leaves no renderer behind. ``DevTools`` is one CDP connection; ``DevTools.new_page()`` opens a
tab that records every console error, uncaught exception and failed resource load.

Chromium must be installed (Debian's ``chromium``; ``.ci/run`` installs it). A missing browser
fails the tests with that message instead of skipping them. ``LLMGINE_CHROMIUM`` names another
binary.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = os.environ.get("LLMGINE_CHROMIUM", "/usr/bin/chromium")

# Headless, and nothing that reaches for the network on its own: the test machines have no
# internet, and background fetches (component updates, sync, QUIC probes) fail noisily there.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


def chromium_binary() -> str:
    """The browser's path; fails (not skips) the test when it is not installed."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests need a real browser. "
            "Install Debian's `chromium` package (apt-get install chromium; .ci/run does it), "
            "or set LLMGINE_CHROMIUM to another Chromium/Chrome binary.",
            pytrace=False,
        )
    return CHROMIUM


@dataclass
class Chromium:
    proc: subprocess.Popen[bytes]
    profile: Path
    log: Path
    port: int
    browser_path: str  # /devtools/browser/<id>

    @classmethod
    def start(cls, tmp: Path) -> Chromium:
        binary = chromium_binary()
        profile = tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = tmp / "chromium.log"
        with open(log, "ab") as out:
            # A process group of its own: stop() ends the browser and every helper process
            # it forked (zygote, renderers, utility), whatever signal dispositions we had.
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                # TMPDIR: its singleton socket's folder (org.chromium.Chromium.*) goes there, not
                # into /tmp, where each run left one behind.
                env={**os.environ, "HOME": str(tmp), "TMPDIR": str(tmp)},
            )
        active = profile / "DevToolsActivePort"  # "<port>\n/devtools/browser/<id>\n"
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                lines = active.read_text().splitlines() if active.exists() else []
                if len(lines) >= 2:
                    return cls(proc, profile, log, int(lines[0]), lines[1])
                if proc.poll() is not None:
                    raise AssertionError(f"{binary} exited with {proc.returncode}:\n{log.read_text()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{binary} did not open its DevTools port:\n{log.read_text()}")
                time.sleep(0.05)
        except BaseException:
            stop_group(proc)
            raise

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.browser_path}"

    def stop(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End the process group we started ``proc`` in (its leader is ``proc``)."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; helpers that outlive it still belong to the group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if proc.poll() is None:
        proc.wait()


class CdpError(AssertionError):
    pass


class DevTools:
    """One CDP connection to the browser; pages are attached to it with flat sessions."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, browser: Chromium) -> DevTools:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(browser.ws_url, max_msg_size=0)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def close(self) -> None:
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass
        await self._ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif (page := self._pages.get(data.get("sessionId", ""))) is not None:
                page.on_event(data["method"], data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the DevTools connection closed"))

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, CALL_TIMEOUT)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def new_page(self) -> Page:
        target = (await self.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, target, session)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.call(f"{domain}.enable")
        return page


@dataclass
class Page:
    devtools: DevTools
    target: str
    session: str
    # Console errors, uncaught exceptions, failed loads and CSP violations, as text.
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    # Every request the page made (requestId -> URL), and why those that failed failed
    # (requestId -> blockedReason, e.g. "csp", or the network error).
    requests: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    _loads: int = 0
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.devtools.call(method, params, self.session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loads += 1
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught: {exc} at {details.get('url')}:{details.get('lineNumber')}")
        elif method == "Network.requestWillBeSent":
            self.requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            self.failed[params["requestId"]] = params.get("blockedReason") or params.get("errorText", "")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
            if entry.get("level") == "error":
                self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._loaded.clear()
        result = await self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), CALL_TIMEOUT)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, show: str | None = None) -> Any:
        """Poll ``expression`` until it is truthy; its value. Fails with the page's errors and
        the value of ``show`` (an expression that says what the page has got)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                state = f"; {show} = {await self.evaluate(show)!r}" if show else ""
                raise AssertionError(
                    f"waited {timeout:.0f}s for {expression!r} in the page{state}; errors: {self.errors}; "
                    f"console: {self.console[-20:]}"
                )
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of what the window shows (1280x1000)."""
        data = await self.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    async def close(self) -> None:
        await self.devtools.call("Target.closeTarget", {"targetId": self.target})
