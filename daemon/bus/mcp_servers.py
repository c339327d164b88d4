"""MCP tool servers: registrations (per session or global), their rules, and their tools as
the session's tools.

A registration is a row of ``mcp_servers`` (migration 110: scope = the session id, or '' for
a global server) and, in memory, a ``Connection`` (mcp/connection.py) that supervises the
server. Rows come back when the daemon starts; a session's servers end with the session.

A server ``NAME``'s tool ``t`` is the tool ``NAME.t`` of every session that sees the server:
its own servers, and the global ones (a session's server hides a global one of the same name).
``Tools`` (bus/tools.py) lists, reads and executes them beside registered tools; an execution
records the same ``ToolExecuted`` event and ``tool.call`` span.

Who may register what (``principal`` in ``register``) - a session token is handed to less
trusted clients, so it must not get the daemon to run host commands:

- HTTP servers: any credential whose scope includes the path, to hosts of ``mcp.allowed_hosts``
  only (loopback by default; read as webhooks.allowed_hosts is, bus/webhook_policy.py: the
  addresses a name resolves to are checked again before each connection), never with an
  environment; a session token's to hosts of ``mcp.session_token_allowed_hosts`` instead (none
  by default: on loopback it reached any local MCP server, one without authentication too);
- stdio servers, sandboxed: API keys and the socket owner; a session token only with
  ``mcp.session_token_stdio``, and then only a command under /usr or /bin, with no mounts,
  no argument directories and no secret references;
- trusted (no sandbox, network): API keys and the socket owner only, never a session token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.errors import BusError, invalid, not_found
from llmgine_daemon.bus.sessions import fetch_session, require_active
from llmgine_daemon.bus.webhook_policy import HostPolicy
from llmgine_daemon.mcp.cgroups import ServerCgroups
from llmgine_daemon.mcp.connection import Connection, ServerConfig
from llmgine_daemon.mcp.launch import Launch, LaunchError, resolve_command
from llmgine_daemon.protocol import ErrorCode, McpServer, McpServerCreate, Tool, now_iso
from llmgine_daemon.protocol.grammar import SECRET_NAME_PATTERN, valid_id
from llmgine_daemon.sandbox.calls import SandboxLimits, SandboxUnavailable
from llmgine_daemon.sandbox.isolation import Isolation

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.mcp.connection import CallResult

log = logging.getLogger("llmgine.mcp")

DEFAULT_HOSTS = ["127.0.0.0/8", "::1", "localhost"]
SEPARATOR = "."
SECRET_PREFIX = "secret:"
MAX_SERVERS = 20  # per scope (a session, or the global scope)
SECRET_RE = re.compile(SECRET_NAME_PATTERN)
# Where a session token's stdio command may live: directories already in the sandbox's view.
SESSION_TOKEN_COMMAND_DIRS = ("/usr/", "/bin/")
# What a provider accepts as a function name (OpenAI and Anthropic: ^[a-zA-Z0-9_-]{1,64}$).
_PROVIDER_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def provider_tool_name(name: str) -> str:
    """The name a tool is offered to a model under: ``server.tool`` -> ``server-tool`` (a
    registered tool's name is a Python identifier, which has no "-")."""
    return _PROVIDER_UNSAFE.sub("_", name.replace(SEPARATOR, "-", 1))[:64]


@dataclass(frozen=True)
class McpPolicy:
    # mcp.allowed_hosts, read as webhooks.allowed_hosts is (bus/webhook_policy.py)
    hosts: HostPolicy = field(default_factory=lambda: HostPolicy.parse(DEFAULT_HOSTS, "mcp.allowed_hosts"))
    # mcp.session_token_allowed_hosts: a session token's HTTP servers (none by default)
    session_token_hosts: HostPolicy = field(
        default_factory=lambda: HostPolicy.parse([], "mcp.session_token_allowed_hosts")
    )
    session_token_stdio: bool = False
    # mcp.session_token_cpu_seconds: RLIMIT_CPU of a session token's stdio server (mcp/launch.py)
    cpu_seconds: int = 0
    # mcp.session_token_memory_mb / _max_processes: such a server's cgroup (mcp/cgroups.py)
    memory_mb: int = 1024
    max_processes: int = 128
    call_timeout: float = 60.0
    start_timeout: float = 15.0


@dataclass
class Registration:
    scope: str  # session id, or "" (global)
    name: str
    spec: dict[str, Any]
    created_at: str
    connection: Connection | None = field(default=None, repr=False)

    @property
    def session_id(self) -> str | None:
        return self.scope or None


class McpServers:
    def __init__(
        self, bus: Bus, policy: McpPolicy | None = None, secrets: Callable[[str], str | None] | None = None
    ) -> None:
        self.bus = bus
        self.policy = policy or McpPolicy()
        self.secrets = secrets or (lambda name: None)
        self.servers: dict[tuple[str, str], Registration] = {}
        self.cgroups = ServerCgroups(self.policy.memory_mb * 2**20, self.policy.max_processes)
        # Several nodes (bus/cluster.py): each runs every registration's server, and follows
        # the others' changes (``reconcile``). A change made here counts up ``_changes`` and
        # marks its registration with it, so a re-read begun before it cannot undo it.
        self._changes = 0
        self._changed: dict[tuple[str, str], int] = {}

    # -- registration -------------------------------------------------------------------

    def check(self, body: McpServerCreate, by_session_token: bool) -> dict[str, Any]:
        """The registration's spec, or a 422/403 saying what is wrong or not allowed."""
        if (body.command is None) == (body.url is None):
            raise invalid("command", "give either a command (stdio) or a url (streamable HTTP)")
        spec: dict[str, Any] = {"timeout": body.timeout, "requires_approval": body.requires_approval}
        if body.url is not None:
            if body.env or body.trusted or body.mounts or body.args:
                raise invalid("url", "env, args, mounts and trusted apply to stdio servers only")
            if not by_session_token:
                self.policy.hosts.check_url(body.url)
                return {**spec, "url": body.url}
            self.policy.session_token_hosts.for_session_token("HTTP MCP servers").check_url(body.url)
            # Marked: each connection is checked against the session tokens' list too.
            return {**spec, "url": body.url, "session_token": True}
        if by_session_token:
            self._check_session_token_stdio(body)
        try:
            resolve_command(body.command or "")
        except LaunchError as exc:
            raise invalid("command", str(exc)) from None
        for key, value in body.env.items():
            if value.startswith(SECRET_PREFIX):
                secret = value[len(SECRET_PREFIX) :]
                if not SECRET_RE.match(secret):
                    raise invalid(f"env.{key}", "secret:NAME must name a secret (A-Z, 0-9 and _)")
                if self.secrets(secret) is None:
                    raise invalid(f"env.{key}", f"no secret {secret!r} (llmgine secret set {secret})")
        for mount in body.mounts:
            if not os.path.isabs(mount) or not os.path.exists(mount):
                raise invalid("mounts", f"{mount[:200]!r} is not an existing absolute path")
        return {
            **spec,
            "command": body.command,
            "args": list(body.args),
            "env": dict(body.env),
            "trusted": body.trusted,
            "mounts": list(body.mounts),
            "auto_mounts": not by_session_token,
        }

    def _check_session_token_stdio(self, body: McpServerCreate) -> None:
        def forbidden(message: str) -> BusError:
            return BusError(ErrorCode.FORBIDDEN, message, {"setting": "mcp.session_token_stdio"})

        if body.trusted:
            raise BusError(ErrorCode.FORBIDDEN, "a session token may not register a trusted MCP server")
        if not self.policy.session_token_stdio:
            raise forbidden(
                "a session token may not register stdio MCP servers; use an API key, or set "
                "mcp.session_token_stdio = true to allow sandboxed ones"
            )
        if body.mounts or any(v.startswith(SECRET_PREFIX) for v in body.env.values()):
            raise forbidden("a session token may not give an MCP server mounts or secrets")
        outside = forbidden("a session token's MCP server command must be a program under /usr or /bin")
        command = body.command or ""
        # A path elsewhere is refused by its name, before any lookup: "not found" for a missing
        # one and 403 for an existing one told a token which programs exist anywhere on the host.
        if "/" in command and not os.path.normpath(os.path.join("/", command)).startswith(SESSION_TOKEN_COMMAND_DIRS):
            raise outside
        try:
            path = resolve_command(command)
        except LaunchError as exc:
            raise invalid("command", str(exc)) from None
        if not os.path.realpath(path).startswith(SESSION_TOKEN_COMMAND_DIRS):
            raise outside

    async def register(
        self, session_id: str | None, body: McpServerCreate, *, by_session_token: bool, replace: bool = False
    ) -> McpServer:
        """``replace``: a server of that name in the scope is removed (its process stopped) in
        the same write that adds this one (`mcp add --replace`), as a tool's ?replace=true."""
        spec = self.check(body, by_session_token)
        scope = session_id or ""
        created_at = now_iso()

        def write(conn: sqlite3.Connection) -> None:
            if session_id is not None:
                require_active(conn, session_id)
            if replace:
                conn.execute("DELETE FROM mcp_servers WHERE scope = ? AND name = ?", (scope, body.name))
            exists = conn.execute(
                "SELECT 1 FROM mcp_servers WHERE scope = ? AND name = ?", (scope, body.name)
            ).fetchone()
            if exists:
                raise BusError(
                    ErrorCode.CONFLICT,
                    f"MCP server {body.name!r} already exists here (remove it first)",
                    {"name": body.name, "session_id": session_id},
                )
            count = conn.execute("SELECT COUNT(*) FROM mcp_servers WHERE scope = ?", (scope,)).fetchone()[0]
            if count >= MAX_SERVERS:
                raise BusError(
                    ErrorCode.LIMIT_REACHED,
                    f"limit reached: at most {MAX_SERVERS} MCP servers per session and globally",
                    {"limit": "mcp_servers", "max": MAX_SERVERS},
                )
            conn.execute(
                "INSERT INTO mcp_servers (scope, name, spec, created_at) VALUES (?, ?, ?, ?)",
                (scope, body.name, json.dumps(spec), created_at),
            )
            self.bus.cluster.registry_changed(conn, session_id)  # the other nodes run it too

        await self.bus.store.write(write)
        self._touch((scope, body.name))
        # Memory follows the store in commit order: swapped with no await in between (a
        # replace or removal committed after this one comes after it here too), the old
        # process stopped after. Stopped first, another replace took the slot meanwhile and
        # was overwritten here: its process ran on, known to no one.
        old = self.servers.pop((scope, body.name), None)
        reg = Registration(scope, body.name, spec, created_at)
        self.servers[(scope, body.name)] = reg
        self._connect(reg)
        assert reg.connection is not None
        if old is not None and old.connection is not None:
            await old.connection.stop()
        await reg.connection.wait_settled(self.policy.start_timeout)
        return self.view(reg)

    def _connect(self, reg: Registration) -> None:
        spec = reg.spec
        label = reg.name if not reg.scope else f"{reg.name}@{reg.scope[:8]}"
        config = ServerConfig(label=label, url=spec.get("url"))
        if config.url is not None:
            hosts = self.policy.session_token_hosts if spec.get("session_token") else self.policy.hosts
            config.resolve = functools.partial(self._allowed_addresses, hosts)
        if spec.get("command"):
            env: dict[str, str] = {}
            for key, value in spec.get("env", {}).items():
                if value.startswith(SECRET_PREFIX):
                    resolved = self.secrets(value[len(SECRET_PREFIX) :])
                    if resolved is None:
                        log.warning("mcp server %s: secret %s is gone; %s left unset", label, value, key)
                        continue
                    config.secrets.append(resolved)
                    value = resolved
                env[key] = value
            config.launch = Launch(
                spec["command"],
                spec.get("args", []),
                env,
                bool(spec.get("trusted")),
                spec.get("mounts", []),
                bool(spec.get("auto_mounts", True)),
                # A session token's (registered without auto_mounts): a sandbox worker's limits,
                # a CPU-time budget and the lowest CPU priority.
                None if spec.get("auto_mounts", True) else self._limits(),
                cpu_seconds=self.policy.cpu_seconds,
            )
            if config.launch.limits is not None:  # and a cgroup for each run, where there are some
                config.cgroups, config.session_id = self.cgroups, reg.scope
                config.uids = self.bus.sandbox  # a uid of its own for each run (a root daemon)
        reg.connection = Connection(config, self._isolation)
        reg.connection.start()

    async def _allowed_addresses(self, hosts: HostPolicy, host: str, port: int) -> list[str]:
        """At each connection: every address the host resolves to must be allowed (a name
        allowed at registration cannot be pointed elsewhere later), and the connection goes
        to these addresses only (mcp/pinned.py), never to a second resolution's."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise LaunchError(f"cannot resolve {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        try:
            hosts.check_resolved(host, addresses)
        except BusError as exc:
            raise LaunchError(exc.message) from None
        return addresses

    def _limits(self) -> SandboxLimits:
        return self.bus.sandbox.limits if self.bus.sandbox is not None else SandboxLimits()

    async def _isolation(self) -> Isolation | None:
        sandbox = self.bus.sandbox
        if sandbox is None:
            return None
        with contextlib.suppress(SandboxUnavailable):
            await sandbox.wait_probed()  # the pool probes the machine as it starts
        return sandbox.isolation

    # -- reading ------------------------------------------------------------------------

    def view(self, reg: Registration) -> McpServer:
        spec = reg.spec
        conn = reg.connection
        return McpServer(
            name=reg.name,
            scope="session" if reg.scope else "global",
            session_id=reg.session_id,
            transport="http" if spec.get("url") else "stdio",
            command=spec.get("command"),
            args=list(spec.get("args", [])),
            url=spec.get("url"),
            env_keys=sorted(spec.get("env", {})),
            trusted=bool(spec.get("trusted")),
            mounts=list(spec.get("mounts", [])),
            timeout=spec.get("timeout"),
            created_at=reg.created_at,
            status=conn.status if conn is not None else "stopped",  # type: ignore[arg-type]
            restarts=conn.restarts if conn is not None else 0,
            last_error=conn.last_error if conn is not None else None,
            pid=conn.pid if conn is not None else None,
            tools=[f"{reg.name}{SEPARATOR}{t.name}" for t in (conn.tools if conn is not None else [])],
            requires_approval=bool(spec.get("requires_approval")),
            skipped_tools=list(conn.listing.skipped) if conn is not None else [],
            tools_skipped=conn.listing.skipped_count if conn is not None else 0,
        )

    async def _check_session(self, session_id: str | None) -> None:
        if session_id is not None:
            await self.bus.store.read(lambda conn: fetch_session(conn, session_id))

    async def list(self, session_id: str | None) -> list[McpServer]:
        await self._check_session(session_id)
        scope = session_id or ""
        return [self.view(r) for (s, _), r in sorted(self.servers.items()) if s == scope]

    def _find(self, session_id: str | None, name: str) -> Registration:
        reg = self.servers.get((session_id or "", name))
        if reg is None:
            raise not_found("mcp_server", name=name, session_id=session_id)
        return reg

    async def get(self, session_id: str | None, name: str) -> McpServer:
        await self._check_session(session_id)
        return self.view(self._find(session_id, name))

    async def server_tools(self, session_id: str | None, name: str) -> list[Tool]:
        await self._check_session(session_id)
        return self._tools_of(self._find(session_id, name), session_id or "")

    def _tools_of(self, reg: Registration, session_id: str) -> list[Tool]:
        conn = reg.connection
        tools = []
        for info in conn.tools if conn is not None else []:
            full = f"{reg.name}{SEPARATOR}{info.name}"
            if not valid_id(full):
                continue  # not callable through a path: /api/sessions/{id}/tools/{name}/execute
            tools.append(
                Tool(
                    name=full,
                    session_id=session_id,
                    description=info.description,
                    parameters=info.parameters,
                    is_async=False,
                    timeout=reg.spec.get("timeout") or self.policy.call_timeout,
                    created_at=reg.created_at,
                    server=reg.name,
                    requires_approval=bool(reg.spec.get("requires_approval")),
                )
            )
        return tools

    def visible(self, session_id: str) -> dict[str, Registration]:
        """The servers a session sees, by name: its own over the global ones."""
        seen = {name: r for (scope, name), r in self.servers.items() if scope == ""}
        seen.update({name: r for (scope, name), r in self.servers.items() if scope == session_id})
        return seen

    async def _settled(self, regs: list[Registration]) -> None:
        """Wait (at most mcp.start_timeout) for servers still making their first connection:
        after a daemon restart their tools are known only once they answered."""
        waiting = [r.connection.wait_settled(self.policy.start_timeout) for r in regs if r.connection is not None]
        if waiting:
            await asyncio.gather(*waiting)

    async def tools_for(self, session_id: str) -> list[Tool]:
        regs = [reg for _, reg in sorted(self.visible(session_id).items())]
        await self._settled(regs)
        return [t for reg in regs for t in self._tools_of(reg, session_id)]

    async def tool(self, session_id: str, name: str) -> Tool:
        server, _, _ = name.partition(SEPARATOR)
        reg = self.visible(session_id).get(server)
        if reg is not None:
            await self._settled([reg])
        for tool in self._tools_of(reg, session_id) if reg is not None else []:
            if tool.name == name:
                return tool
        raise not_found("tool", tool_name=name, session_id=session_id)

    # -- calling ------------------------------------------------------------------------

    async def call(
        self, session_id: str, name: str, arguments: dict[str, Any], timeout: float | None
    ) -> tuple[Tool, CallResult]:
        await self.bus.store.read(lambda conn: require_active(conn, session_id))
        tool = await self.tool(session_id, name)
        reg = self.visible(session_id)[tool.server or ""]
        assert reg.connection is not None
        deadline = timeout or tool.timeout or self.policy.call_timeout
        outcome = await reg.connection.call(name[len(reg.name) + 1 :], arguments, deadline)
        reg.connection.count(reg.name, outcome)
        return tool, outcome

    # -- removal and life ---------------------------------------------------------------

    async def delete(self, session_id: str | None, name: str) -> None:
        await self._check_session(session_id)
        scope = session_id or ""

        def write(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM mcp_servers WHERE scope = ? AND name = ?", (scope, name)).rowcount
            if gone:
                self.bus.cluster.registry_changed(conn, session_id)
            return int(gone)

        if not await self.bus.store.write(write):
            raise not_found("mcp_server", name=name, session_id=session_id)
        self._touch((scope, name))
        reg = self.servers.pop((scope, name), None)
        if reg is not None and reg.connection is not None:
            await reg.connection.stop()

    def end_with_session(self, conn: sqlite3.Connection, session_id: str, purged: bool) -> None:
        """A session's servers end with it, in its ending transaction (Sessions.ending); the
        other nodes stop theirs (bus/cluster.py ``registry_changed``)."""
        if conn.execute("DELETE FROM mcp_servers WHERE scope = ?", (session_id,)).rowcount:
            self.bus.cluster.registry_changed(conn, session_id)

    async def on_session_end(self, session_id: str, purged: bool) -> None:
        for key in [k for k in self.servers if k[0] == session_id]:
            self._touch(key)
            reg = self.servers.pop(key)
            if reg.connection is not None:
                await reg.connection.stop()

    def _touch(self, key: tuple[str, str]) -> None:
        self._changes += 1
        self._changed[key] = self._changes

    async def reconcile(self, scopes: set[str | None] | None) -> None:
        """Run here the servers the store has for these scopes (session ids, None for the
        global scope; ``scopes`` None: all), after another node added, replaced or removed
        some (bus/cluster.py ``registry_changed``); stop those it no longer has."""
        since = self._changes
        wanted = None if scopes is None else sorted(s or "" for s in scopes)

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = "SELECT scope, name, spec, created_at FROM mcp_servers"
            if wanted is None:
                return conn.execute(sql).fetchall()
            return [row for scope in wanted for row in conn.execute(sql + " WHERE scope = ?", (scope,)).fetchall()]

        stored = {(row[0], row[1]): row for row in await self.bus.store.read(read)}
        in_scope = {k for k in self.servers if wanted is None or k[0] in wanted} | set(stored)
        for key in sorted(in_scope):
            if self._changed.get(key, 0) > since:
                continue  # changed here while this read ran: the change is newer
            row, reg = stored.get(key), self.servers.get(key)
            if reg is not None and (row is None or row[3] != reg.created_at):
                # Listed until it has stopped: a removal or a session's end that comes meanwhile
                # finds it, and its stop() waits for this one (it answered with the process
                # still running when the registration was gone first).
                if reg.connection is not None:
                    await reg.connection.stop()
                if self.servers.get(key) is reg:
                    del self.servers[key]
                reg = None
            if row is not None and reg is None and self._changed.get(key, 0) <= since:
                new = Registration(row[0], row[1], json.loads(row[2]), row[3])
                self.servers[key] = new
                self._connect(new)
        # Marks older than this read matter to no later one (each begins after it).
        self._changed = {k: n for k, n in self._changed.items() if n > since}

    async def start(self) -> None:
        """Bring the registrations back (those of sessions that ended meanwhile are removed)."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            conn.execute(
                "DELETE FROM mcp_servers WHERE scope != '' AND scope NOT IN"
                " (SELECT session_id FROM sessions WHERE status = 'active')"
            )
            return conn.execute("SELECT scope, name, spec, created_at FROM mcp_servers ORDER BY scope, name").fetchall()

        for scope, name, spec, created_at in await self.bus.store.write(read):
            old = self.servers.get((scope, name))
            if old is not None and old.created_at == created_at:
                continue  # started already by a re-read for another node's change (reconcile)
            reg = Registration(scope, name, json.loads(spec), created_at)
            self.servers[(scope, name)] = reg
            self._connect(reg)
            if old is not None and old.connection is not None:
                await old.connection.stop()

    async def stop(self) -> None:
        connections = [r.connection for r in self.servers.values() if r.connection is not None]
        self.servers.clear()
        await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)
        await self.cgroups.close()
