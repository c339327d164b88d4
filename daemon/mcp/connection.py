"""One MCP server as the daemon holds it: a supervisor task that connects (starting the process
for stdio, launch.py), lists the server's tools, keeps the session for tool calls, and
reconnects with exponential backoff when the process exits or the connection breaks.

The official ``mcp`` SDK speaks the protocol (``ClientSession``; ``streamable_http_client``
for HTTP). For stdio the daemon starts the process itself (the sandbox, the process group,
the environment are its business, not the SDK's) and bridges the process's pipes to the
session's streams (``_process_streams``). The SDK and anyio are imported when a connection
starts, never when this module is imported.

A server's stderr goes to the daemon's log (logger ``llmgine.mcp``), a line at most
``MAX_STDERR_LINE`` characters, at most ``STDERR_LINES_PER_MINUTE`` lines a minute per server
(the rest counted), the values of its secret environment variables replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmgine_daemon.aio import cancel_and_wait, killpg, wait_event
from llmgine_daemon.mcp import cgroups, launch, pinned
from llmgine_daemon.mcp.cgroups import ServerCgroups
from llmgine_daemon.observability import metrics
from llmgine_daemon.protocol import CallErrorCode, McpSkippedTool
from llmgine_daemon.protocol.grammar import MCP_TOOL_NAME_RE, MCP_TOOL_NAME_RULE
from llmgine_daemon.sandbox.isolation import Isolation
from llmgine_daemon.textsafe import CONTROL_ESCAPES

if TYPE_CHECKING:
    from llmgine_daemon.sandbox.pool import SandboxPool

log = logging.getLogger("llmgine.mcp")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a connection that lived this long restarts from the shortest backoff
INIT_TIMEOUT = 20.0
# What a server's tools/list answer may hold (checked where it is read, ``_list_tools``): a
# tool over a limit is skipped (not offered; logged, and shown in the server's status), the
# server's other tools are kept.
MAX_TOOLS = 500
MAX_DESCRIPTION = 8 * 1024  # characters
MAX_PARAMETERS = 64 * 1024  # characters of its input schema as JSON
MAX_LISTING = 2 * 1024 * 1024  # characters of all its tools' descriptions and schemas
MAX_PAGES = 100  # tools/list pages read (a cursor that never ends)
MAX_ANNOUNCED = 4 * MAX_LISTING  # characters of descriptions and schemas read, skipped ones too
MAX_SKIPPED_SHOWN = 20  # skipped tools named in the status (all are counted)
MORE_PAGES = "(more pages)"  # the name of the note that tools/list was not read to its end
MAX_RESULT = 1024 * 1024  # characters of a tool's result as JSON
MAX_STDERR_LINE = 2000
STDERR_LINES_PER_MINUTE = 200
# How long a call waits for a server that is (re)starting.
READY_WAIT = 10.0
CONNECTION_CLOSED = -32000  # the JSON-RPC error the SDK answers pending calls with (mcp_types.jsonrpc)


@dataclass
class ServerConfig:
    label: str  # for logs: "name" or "name@session"
    launch: launch.Launch | None = None  # stdio
    url: str | None = None  # streamable HTTP
    secrets: list[str] = field(default_factory=list)  # values to keep out of the log
    # HTTP: a host's addresses, checked (raises LaunchError to refuse): asked before each
    # connection, and the only addresses connected to (pinned.py)
    resolve: pinned.Resolve | None = None
    # stdio, a session token's: a cgroup for each run (mcp/cgroups.py), where there are cgroups
    cgroups: ServerCgroups | None = None
    session_id: str | None = None  # whose servers share their cgroup's limits
    # stdio, a session token's: the pool that lends each run a uid (a root daemon's sandbox.uids)
    uids: SandboxPool | None = None


@dataclass(frozen=True)
class ToolInfo:
    name: str  # the server's own name for it
    description: str
    parameters: dict[str, Any]


@dataclass
class Listing:
    tools: list[ToolInfo] = field(default_factory=list)
    skipped: list[McpSkippedTool] = field(default_factory=list)  # the first MAX_SKIPPED_SHOWN
    skipped_count: int = 0


@dataclass
class CallResult:
    result: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0


def _describe(exc: BaseException, first_line: bool = False) -> str:
    """What went wrong, for ``last_error`` and a failed call. ``first_line`` (an HTTP server):
    only the first line of each message - the next ones of a response the client could not
    read quote it (pydantic's ``input_value=...``), and the URL may be any service of
    ``mcp.allowed_hosts`` (loopback by default), not a server at all: a session token must
    not read another service's answers through them."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e, first_line) for e in exc.exceptions)
    text = str(exc) or type(exc).__name__
    if first_line:
        text = text.split("\n", 1)[0]
    return text[:500]


class Connection:
    def __init__(self, config: ServerConfig, isolation: Callable[[], Awaitable[Isolation | None]]) -> None:
        """``isolation``: the sandbox's isolation once it is known (the pool probes it when it
        starts), None without a sandbox."""
        self.config = config
        self.isolation = isolation
        self.status = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self.listing = Listing()  # the last tools/list: its tools, and what was skipped and why
        self._session: Any = None
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()  # the first attempt succeeded or failed
        self._stop = asyncio.Event()
        self._broken = asyncio.Event()  # a call saw the connection fail: reconnect
        self._task: asyncio.Task[None] | None = None
        self._connected = False  # the current attempt got as far as a session
        self._proc: asyncio.subprocess.Process | None = None  # the stdio server's, while it runs
        self._cgroup: list[Path] = []  # the run's cgroup, while it exists
        self._uid: int | None = None  # the uid the pool lent the run, until given back
        self._killed_for: str | None = None  # why the kernel ended the last run (its memory)
        self._stopped: asyncio.Future[None] | None = None  # the stop, once asked for

    @property
    def tools(self) -> list[ToolInfo]:
        return self.listing.tools

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"mcp:{self.config.label}")

    async def wait_settled(self, timeout: float) -> None:
        await wait_event(self._settled, timeout)

    async def stop(self) -> None:
        """Stop the server: its process killed, its cgroup removed. Every caller waits until
        it has stopped: a second caller (a removal while another node's change was being
        applied, a session's end) returned at once while the first was still killing it, and
        its request was answered with the process running."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop_now())
        await asyncio.shield(self._stopped)

    async def _stop_now(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except (TimeoutError, asyncio.CancelledError):
            await cancel_and_wait(task)
        except Exception:  # the supervisor logs its own failures
            pass
        # A start cancelled before the server answered (still in `initialize`) did not always
        # reach its cleanup: the process was left running after `mcp remove` (and a session
        # token could register and remove silent servers past the 20 it may have).
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            await _kill(proc)
        await self._release_cgroup()
        self.status = "stopped"
        # Whoever waits for its first attempt (a registration replaced, or removed, meanwhile)
        # is answered now, not at mcp.start_timeout.
        self._settled.set()

    async def _release_cgroup(self) -> None:
        """After the run's process ended: note an OOM kill or a refused fork, remove its
        cgroup, and give its uid back."""
        paths = self._cgroup  # kept until removed: a stop cancelling this one does it again
        if paths and self.config.cgroups is not None:
            limits = self.config.cgroups
            self._killed_for = cgroups.killed_for_memory(paths, limits.memory_bytes) or cgroups.refused_for_processes(
                paths, limits.processes
            )
            await self.config.cgroups.release(paths)
        self._cgroup = []
        uid, self._uid = self._uid, None
        if uid is not None and self.config.uids is not None:  # its processes are gone (or killed)
            self.config.uids.give_back_uid(uid)

    async def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await self._run_once()
            except launch.LaunchError as exc:
                self.last_error = str(exc)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - a server's failure never ends the daemon
                self.last_error = _describe(exc, first_line=self.config.url is not None)
            finally:
                self._session = None
                self._ready.clear()
                self.pid = None
                if self._killed_for:  # what the connection saw of it says less
                    self.last_error, self._killed_for = self._killed_for, None
                self._settled.set()
            if self._stop.is_set():
                break
            if time.monotonic() - began > STABLE_AFTER:
                backoff = BACKOFF_MIN
            # failed: it could not start or connect; restarting: it ran, then ended.
            self.status = "restarting" if self._connected else "failed"
            self.restarts += 1
            metrics.inc("mcp_server_restarts_total", server=self.config.label.partition("@")[0])
            log.warning(
                "mcp server %s: connection ended (%s); restarting in %.1f s",
                self.config.label,
                self.last_error or "exited",
                backoff,
            )
            await wait_event(self._stop, backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.status = "stopped"

    async def _run_once(self) -> None:
        self._broken.clear()
        self._connected = False
        await load_sdk()
        if self.config.launch is not None:
            iso = await self.isolation()
            try:
                if self.config.uids is not None:
                    self._uid = await self.config.uids.lend_uid()
                if self.config.cgroups is not None:
                    self._cgroup = await self.config.cgroups.make(self.config.label, self.config.session_id or "")
                proc = self._proc = await launch.start(iso, self.config.launch, self._cgroup, self._uid)
            except BaseException:
                await self._release_cgroup()
                raise
            self.pid = proc.pid
            errors = asyncio.get_running_loop().create_task(self._pump_stderr(proc))
            try:
                async with _process_streams(proc) as streams:
                    await self._serve(streams, proc)
                if proc.returncode is not None:
                    self.last_error = f"the process exited with status {proc.returncode}"
            finally:
                await _end_process(proc)
                self._proc = None
                await cancel_and_wait(errors)
                await self._release_cgroup()
        else:
            from mcp.client.streamable_http import streamable_http_client

            url, resolve = self.config.url, self.config.resolve
            assert url is not None and resolve is not None
            parts = urlsplit(url)
            # Refused here with the policy's own words; the connections check again (pinned.py).
            await resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
            async with (
                pinned.http_client(resolve) as client,
                streamable_http_client(url, http_client=client) as streams,
            ):
                await self._serve(streams, None)

    async def _serve(self, streams: Any, proc: asyncio.subprocess.Process | None) -> None:
        import anyio
        from mcp.client.session import ClientSession

        read, write = streams
        async with ClientSession(read, write) as session:
            with anyio.fail_after(INIT_TIMEOUT):
                await session.initialize()
                self.listing = await _list_tools(session)
            if self.listing.skipped_count:
                log.warning(
                    "mcp server %s: %d of its tools skipped (not offered): %s",
                    self.config.label,
                    self.listing.skipped_count,
                    "; ".join(f"{s.name!r}: {s.reason}" for s in self.listing.skipped[:5]),
                )
            self._session = session
            self._connected = True
            self.status = "running"
            self.last_error = None
            self._ready.set()
            self._settled.set()
            log.info("mcp server %s: connected, %d tools", self.config.label, len(self.tools))
            waits = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._broken.wait())]
            if proc is not None:
                waits.append(asyncio.ensure_future(proc.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
                self._ready.clear()
                self._session = None

    # -- calls ----------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> CallResult:
        t0 = time.monotonic()

        def done(result: Any = None, error: dict[str, Any] | None = None) -> CallResult:
            return CallResult(result, error, round((time.monotonic() - t0) * 1000, 3))

        if not self._ready.is_set():
            await wait_event(self._ready, min(timeout, READY_WAIT))
        session = self._session
        if session is None:
            return done(error=self._unavailable())
        try:
            async with asyncio.timeout(timeout):
                outcome = await session.call_tool(tool, arguments)
        except TimeoutError:
            return done(error={"code": CallErrorCode.TIMEOUT, "message": f"no answer within {timeout:g} s"})
        except Exception as exc:
            from mcp.shared.exceptions import MCPError

            if isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED:
                return done(error={"code": CallErrorCode.EXECUTION_FAILED, "message": exc.error.message[:2000]})
            self._broken.set()
            why = _describe(exc, first_line=self.config.url is not None)
            return done(error={"code": CallErrorCode.SERVER_UNAVAILABLE, "message": why})
        result, error = convert(outcome)
        return done(result, error)

    def count(self, server: str, outcome: CallResult) -> None:
        """The call in the metrics: ``mcp_tool_calls_total`` by outcome and its duration."""
        code = outcome.error.get("code", "error") if outcome.error else "ok"
        metrics.inc("mcp_tool_calls_total", server=server, outcome=code)
        metrics.observe("mcp_tool_call_duration_seconds", outcome.duration_ms / 1000, server=server)

    def _unavailable(self) -> dict[str, Any]:
        why = f": {self.last_error}" if self.last_error else ""
        return {
            "code": CallErrorCode.SERVER_UNAVAILABLE,
            "message": f"MCP server {self.config.label} is {self.status}{why}",
        }

    # -- stderr ---------------------------------------------------------------------------

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        window, lines, dropped = time.monotonic(), 0, 0
        while True:
            try:
                raw = await proc.stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over the limit
                raw = b"[a line too long to read]\n"
            if not raw:
                break
            now = time.monotonic()
            if now - window >= 60:
                if dropped:
                    log.warning("mcp server %s: %d stderr lines not logged", self.config.label, dropped)
                window, lines, dropped = now, 0, 0
            if lines >= STDERR_LINES_PER_MINUTE:
                dropped += 1
                continue
            lines += 1
            text = raw.decode("utf-8", "replace").rstrip()
            for secret in self.config.secrets:
                if secret:
                    text = text.replace(secret, "[redacted]")
            log.info("mcp server %s: %s", self.config.label, text[:MAX_STDERR_LINE])


# The SDK's modules this file uses: imported in a thread the first time a server connects
# (over a second of imports that would otherwise hold the event loop).
SDK_MODULES = (
    "anyio",
    "mcp_types",
    "mcp.client.session",
    "mcp.client.streamable_http",
    "httpx2",
    "httpcore2",
    "mcp.shared.message",
    "mcp.shared.exceptions",
)


async def load_sdk() -> None:
    if not all(name in sys.modules for name in SDK_MODULES):
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in SDK_MODULES])


def convert(outcome: Any) -> tuple[Any, dict[str, Any] | None]:
    """A CallToolResult as (result, error): the structured content when there is one, else the
    text (one text block), else the content blocks as JSON."""
    texts = [block.text for block in outcome.content if getattr(block, "type", "") == "text"]
    if outcome.is_error:
        message = "\n".join(texts)[:2000] or "the tool reported an error"
        return None, {"code": CallErrorCode.EXECUTION_FAILED, "message": message}
    if outcome.structured_content is not None:
        value: Any = outcome.structured_content
    elif len(texts) == len(outcome.content) == 1:
        value = texts[0]
    else:
        value = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in outcome.content]
    if len(json.dumps(value, default=str)) > MAX_RESULT:
        return None, {"code": CallErrorCode.RESULT_TOO_LARGE, "message": f"over {MAX_RESULT} characters"}
    return value, None


def _shown(name: Any) -> str:
    text = name if isinstance(name, str) else repr(name)
    text = text.translate(CONTROL_ESCAPES)
    return text if len(text) <= 80 else text[:79] + "\u2026"


def check_tool(name: Any, description: str, parameters_chars: int, seen: set[str]) -> str | None:
    """Why a tool a server announced is not offered, or None: its name breaks the grammar
    (protocol/grammar.py MCP_TOOL_NAME_PATTERN) or repeats an earlier one, its description or
    input schema is over its limit."""
    if not isinstance(name, str) or not MCP_TOOL_NAME_RE.fullmatch(name):
        return f"name: must be {MCP_TOOL_NAME_RULE}"
    if name in seen:
        return "name: announced twice (the first is kept)"
    if len(description) > MAX_DESCRIPTION:
        return f"description: {len(description)} characters, over {MAX_DESCRIPTION}"
    if parameters_chars > MAX_PARAMETERS:
        return f"inputSchema: {parameters_chars} characters as JSON, over {MAX_PARAMETERS}"
    return None


async def _list_tools(session: Any) -> Listing:
    """The server's tools, read page by page, each checked (``check_tool``); what breaks a
    rule is skipped and listed with its reason, the rest kept."""
    import mcp_types

    listing = Listing()
    seen: set[str] = set()
    listed = announced = 0  # characters of descriptions and schemas kept, and read

    def skip(name: Any, reason: str, always: bool = False) -> None:
        listing.skipped_count += 1
        # The note that pages went unread (``always``, once) is shown past the first 20.
        if len(listing.skipped) < MAX_SKIPPED_SHOWN or always:
            listing.skipped.append(McpSkippedTool(_shown(name), reason))

    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            description = tool.description or ""
            parameters = dict(tool.input_schema or {"type": "object"})
            size = len(json.dumps(parameters, default=str))
            chars = len(description) + size
            announced += chars
            why = check_tool(tool.name, description, size, seen)
            if why is None and len(listing.tools) >= MAX_TOOLS:
                why = f"over the limit of {MAX_TOOLS} tools per server"
            if why is None and listed + chars > MAX_LISTING:
                why = f"over the limit of {MAX_LISTING} characters of descriptions and schemas per server"
            if why is not None:
                skip(tool.name, why)
                continue
            seen.add(tool.name)
            listed += chars
            listing.tools.append(ToolInfo(tool.name, description, parameters))
        cursor = page.next_cursor
        if not cursor:
            break
        if len(listing.tools) >= MAX_TOOLS:
            skip(MORE_PAGES, f"tools/list: further pages not read ({MAX_TOOLS} tools kept)", always=True)
            break
        if announced > MAX_ANNOUNCED:
            skip(
                MORE_PAGES,
                f"tools/list: further pages not read (over {MAX_ANNOUNCED} characters announced)",
                always=True,
            )
            break
    else:
        skip(MORE_PAGES, f"tools/list: more than {MAX_PAGES} pages; the rest not read", always=True)
    return listing


@contextlib.asynccontextmanager
async def _process_streams(proc: asyncio.subprocess.Process) -> AsyncIterator[Any]:
    """The process's stdout (one JSON-RPC message a line) and stdin as the session's streams."""
    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage

    read_send, read_receive = anyio.create_memory_object_stream[Any](0)
    write_send, write_receive = anyio.create_memory_object_stream[Any](0)
    assert proc.stdout is not None and proc.stdin is not None
    stdout, stdin = proc.stdout, proc.stdin

    async def reader() -> None:
        async with read_send:
            while True:
                try:
                    line = await stdout.readline()
                except (ValueError, asyncio.LimitOverrunError) as exc:
                    await read_send.send(ValueError(f"a message over {launch.MAX_LINE} bytes: {exc}"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    message: Any = SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
                except ValueError as exc:
                    message = exc
                await read_send.send(message)

    async def writer() -> None:
        async with write_receive:
            async for item in write_receive:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                try:
                    stdin.write(data.encode())
                    await stdin.drain()
                except (ConnectionError, OSError):
                    return

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(writer)
        try:
            yield read_receive, write_send
        finally:
            group.cancel_scope.cancel()


async def _end_process(proc: asyncio.subprocess.Process) -> None:
    """Close its stdin, give it a moment to exit, then kill its whole process group."""
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    if proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
    await _kill(proc)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill its whole process group (bubblewrap's: the sandbox's init dies with it) and reap it."""
    killpg(proc.pid)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5.0)
