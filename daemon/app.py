"""create_app(settings): app keys, cleanup contexts, the edge middleware and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web
from llmgine_daemon.api import (
    apidocs,
    approvals,
    auth,
    commands,
    db,
    edge,
    engine_memory,
    engines,
    events,
    guard,
    handlers,
    lifecycle,
    limits,
    mcp,
    observability,
    openapi,
    routing,
    schedules,
    secrets,
    sessions,
    streams,
    system,
    tools,
    usage,
    webhooks,
)
from llmgine_daemon.api.keys import (
    BUS,
    CREDENTIALS,
    DATABASE,
    FATAL,
    LISTENERS,
    LLM,
    OBSERVABILITY,
    SETTINGS,
    SHUTDOWN,
    WEBSOCKETS,
)
from llmgine_daemon.api.origins import check_bind
from llmgine_daemon.api.webhook_sender import HttpSender
from llmgine_daemon.bus.approvals import ApprovalPolicy
from llmgine_daemon.bus.auth import Credentials
from llmgine_daemon.bus.capacity import Capacity
from llmgine_daemon.bus.cluster import LocalCluster
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.database import Database
from llmgine_daemon.bus.mcp_servers import McpPolicy
from llmgine_daemon.bus.webhook_policy import SESSION_TOKEN_HOSTS, HostPolicy
from llmgine_daemon.bus.webhooks import WebhookConfig
from llmgine_daemon.engines import ENGINE_TYPES
from llmgine_daemon.engines.context import EngineContext
from llmgine_daemon.engines.providers import Providers
from llmgine_daemon.observability.core import Observability
from llmgine_daemon.sandbox.pool import SandboxLimits, SandboxPool
from llmgine_daemon.secrets import SecretStore
from llmgine_daemon.settings import Settings
from llmgine_daemon.store.db import StorageError, Store
from llmgine_daemon.store.maintenance import Retention, rules_from
from llmgine_daemon.store.telemetry import adopt_legacy, refuse_emptied, telemetry_path

log = logging.getLogger("llmgine.app")

# aiohttp tries the dynamic routes under one prefix (/api/sessions: 27 of them) in registration
# order, a regex match and a coroutine each (about 1 us): the busiest (publish an event, read a
# session, submit a command) go first. The path ids that could take a fixed segment refuse it
# by pattern ({event_id} is never "stream", {command_id} never "batch"), so the order does not
# decide what matches.
ROUTE_MODULES = (
    events,
    sessions,
    commands,
    approvals,
    lifecycle,
    system,
    streams,
    engines,
    engine_memory,
    tools,
    handlers,
    mcp,
    observability,
    auth,
    db,
    secrets,
    webhooks,
    schedules,
    openapi,
    apidocs,
    usage,
)


def sandbox_pool(settings: Settings) -> SandboxPool:
    limits = SandboxLimits(
        deadline=settings["sandbox.deadline"],
        memory_bytes=settings["sandbox.memory_mb"] * 2**20,
        open_files=settings["sandbox.open_files"],
        processes=settings["sandbox.max_processes"],
        file_size_bytes=settings["sandbox.file_size_mb"] * 2**20,
        max_output=settings["sandbox.max_output"],
        max_result=settings["sandbox.max_result"],
        max_depth=settings["sandbox.max_depth"],
        max_timeout=min(settings["sandbox.max_timeout"], 3600.0),
        session_share=settings["sandbox.session_share"],
        tmp_bytes=settings["sandbox.tmp_mb"] * 2**20,
        session_log_records=settings["security.limits.session_log_records"],
    )
    return SandboxPool(
        settings.workers,
        limits,
        isolation=settings["sandbox.isolation"],
        user=settings["sandbox.user"],
        group=settings["sandbox.group"] or "",
        uids=settings["sandbox.uids"],
    )


def webhook_config(settings: Settings) -> WebhookConfig:
    return WebhookConfig(
        policy=HostPolicy.parse(settings["webhooks.allowed_hosts"]),
        session_token_policy=HostPolicy.parse(settings[SESSION_TOKEN_HOSTS], SESSION_TOKEN_HOSTS),
        timeout=settings["webhooks.timeout"],
        retry_for=settings["webhooks.retry_for"],
        retry_base=settings["webhooks.retry_base"],
        retry_cap=settings["webhooks.retry_cap"],
        max_per_session=settings["webhooks.max_per_session"],
        max_total=settings["webhooks.max_total"],
        keep_for=settings["webhooks.keep_days"] * 86400.0,
    )


def _store(settings: Settings, path: Path, *, telemetry: bool = False) -> Store:
    url = settings.postgres_url
    if url is not None:
        # Imported only here: the SQLite path never loads the driver. Logs and spans are in the
        # same database, in a store (a writer connection) of their own (store/postgres.py).
        try:
            from llmgine_daemon.store.postgres import PgStore
        except ImportError as exc:
            raise StorageError(
                f"PostgreSQL needs its driver, which is not installed ({exc.name}): pip install 'llmgine[postgres]'"
            ) from None

        store: Store = PgStore(url, settings["database.busy_timeout"], telemetry=telemetry)  # type: ignore[assignment]
        return store
    return Store(
        path,
        synchronous=settings["database.synchronous"],
        busy_timeout=settings["database.busy_timeout"],
        telemetry=telemetry,
    )


def _cluster(settings: Settings) -> LocalCluster:
    """The other daemons this one shares its bus with: on a PostgreSQL database any number
    (bus/cluster_shared.py, imported only then), on SQLite none."""
    url = settings["database.url"] or ""
    if url.startswith(("postgresql://", "postgres://")):
        from llmgine_daemon.bus.cluster_shared import SharedCluster

        node_file = settings.paths.state_dir / "cluster-node"
        return SharedCluster(url, lease_timeout=settings["cluster.lease_timeout"], node_file=node_file)
    return LocalCluster(lease_timeout=settings["cluster.lease_timeout"])


async def _credentials(settings: Settings, store: Store) -> Credentials:
    """The keys and tokens, loaded once (api/guard.py's ``security_ctx`` takes them over), and
    the bind checked against them: a non-loopback listener needs a credential made on purpose,
    asked of the database in use (on PostgreSQL, the cluster's) before anything else starts or
    logs."""
    credentials = Credentials(store, settings["security.api_key_secret"])
    await credentials.load()
    check_bind(settings, credentials.has_user_keys)
    return credentials


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stores:
        if settings.postgres_url is None:
            refuse_emptied(settings.database_path)
        store = _store(settings, settings.database_path)
        await store.open()
        stores.push_async_callback(store.close)
        app[CREDENTIALS] = await _credentials(settings, store)
        # Logs and spans go to a file of their own, so a telemetry flush never holds the
        # writer that requests' writes wait for (store/telemetry.py).
        telemetry = _store(settings, telemetry_path(settings.database_path), telemetry=True)
        await telemetry.open()
        stores.push_async_callback(telemetry.close)
        await adopt_legacy(store, telemetry)
        # Observability first in, last out: it sees the bus start and stop, and flushes its
        # buffered logs and spans before the stores close.
        obs = Observability(settings, store, telemetry)
        app[OBSERVABILITY] = obs
        # Every open WebSocket is in app[WEBSOCKETS] (closed on shutdown); counting them when
        # metrics are read needs no bookkeeping in the stream handlers.
        sockets = app[WEBSOCKETS]
        obs.registry.gauge_callback("ws_subscribers", lambda: [({}, float(len(sockets)))])
        # Stopped whatever happens from here, a failed start included (stop undoes what start
        # got done: the log handler, the installed registry and tracer).
        stores.push_async_callback(obs.stop)
        await obs.start()
        pool = sandbox_pool(settings)
        # The LLM providers (their HTTP connection pool) are shared by all engines: the Bus
        # passes every engine it builds an EngineContext with them (engines/context.py).
        providers = Providers(settings)
        limits = settings.limits
        cluster = _cluster(settings)
        cluster.on_fatal = lambda reason: (app[FATAL].append(reason), app[SHUTDOWN].set())
        capacity = Capacity(
            max_sessions=limits.max_sessions,
            max_engines_per_session=limits.max_engines_per_session,
            max_tools_per_session=limits.max_tools_per_session,
            max_handlers_per_session=limits.max_handlers_per_session,
            max_pending_commands_per_session=limits.max_pending_commands_per_session,
            max_pending_bytes_per_session=limits.max_pending_bytes_per_session,
            max_event_bytes_per_session=limits.max_event_bytes_per_session,
            max_engine_memory_per_session=limits.max_engine_memory_per_session,
            serialize=cluster.serialize,
        )
        hooks = webhook_config(settings)
        sender = HttpSender(hooks.policy, hooks.session_token_policy)
        bus = Bus(
            store,
            engine_types=ENGINE_TYPES,
            sandbox=pool,
            capacity=capacity,
            engine_context=EngineContext.factory(providers),
            webhooks=hooks,
            webhook_sender=sender,
            schedule_limits=(settings["schedules.max_per_session"], settings["schedules.max_total"]),
            prices=settings["usage.prices"],
            approval_policy=ApprovalPolicy(settings["tools.require_approval"], settings["tools.approval_timeout"]),
            mcp=McpPolicy(
                hosts=HostPolicy.parse(settings["mcp.allowed_hosts"], "mcp.allowed_hosts"),
                session_token_hosts=HostPolicy.parse(
                    settings["mcp.session_token_allowed_hosts"], "mcp.session_token_allowed_hosts"
                ),
                session_token_stdio=settings["mcp.session_token_stdio"],
                cpu_seconds=settings["mcp.session_token_cpu_seconds"],
                memory_mb=settings["mcp.session_token_memory_mb"],
                max_processes=settings["mcp.session_token_max_processes"],
                call_timeout=settings["mcp.call_timeout"],
                start_timeout=settings["mcp.start_timeout"],
            ),
            secrets=SecretStore(settings.paths.config_dir / "secrets.json").get,
            cluster=cluster,
        )
        app[BUS] = bus
        bus.commands.retries.set_defaults(settings["commands.retry_defaults"])
        app[LLM] = bus.engines.context
        retention = Retention(
            {"main": store, "telemetry": telemetry}, rules_from(settings), settings["database.retention_interval"]
        )
        app[DATABASE] = Database(store, telemetry, retention)
        try:
            await pool.start()
            await bus.start()
            retention.start()
            yield
        finally:
            await retention.stop()
            await bus.stop()
            await sender.close()
            await providers.close()
            await pool.stop()


async def drain_commands(app: web.Application) -> None:
    """Shutdown, before in-flight requests are waited for: start no more commands; running ones
    finish (their waiting requests get answers), queued ones stay queued for the next start.
    The daemon calls it as soon as it is told to stop (server.py), before its connections
    drain; aiohttp's shutdown again (idempotent: an app run by a test's runner).
    The stores give up sooner on a database that does not answer (store/postgres.py
    STOP_STALL_S): a stop does not wait a connect timeout per queued write."""
    if DATABASE in app:
        app[DATABASE].main.stopping()
        app[DATABASE].telemetry.stopping()
    if BUS in app:
        app[BUS].commands.runner.drain()


async def _close_websockets(app: web.Application) -> None:
    sockets = list(app[WEBSOCKETS])
    if sockets:
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon shutting down") for ws in sockets),
            return_exceptions=True,
        )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        # One pass: request id, span, guard, handler, error envelope, metrics (api/edge.py).
        middlewares=edge.MIDDLEWARES,
        client_max_size=settings["server.max_body_size"],
    )
    app[SETTINGS] = settings
    app[LISTENERS] = []
    app[SHUTDOWN] = asyncio.Event()
    app[FATAL] = []
    app[WEBSOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_bus_ctx)
    # After the bus: credentials live in its store. Guards every route, present and future.
    guard.install(app, settings)
    app.on_shutdown.append(drain_commands)
    # After the bus: streams start once it is up and end (1001) before it stops.
    app.cleanup_ctx.append(streams.streams_ctx)
    app.on_shutdown.append(streams.close_streams)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(edge.prepare_response)
    for module in ROUTE_MODULES:  # Expect: 100-continue answered after the guard (api/limits.py)
        app.add_routes(
            web.RouteDef(r.method, r.path, r.handler, {"expect_handler": limits.expect_continue, **r.kwargs})
            if isinstance(r, web.RouteDef)
            else r
            for r in module.routes
        )
    routing.install(app, limits.expect_continue)  # aiohttp's answers, found by the path's shape (api/routing.py)
    return app
