"""Client: one method per llmgined endpoint, over a Unix socket or TCP.

Standard library only (plus msgspec and the daemon's protocol module): importing aiohttp costs
more than a whole request/response CLI call, so the CLI never pays for it.

    client = Client()                    # where: the url argument, LLMGINE_URL, the local socket
    session = client.create_session(name="demo")
    client.register_command_handler(session, "Greet", greet)   # greet's source is sent
    client.execute(session, "Greet", name="Ann")                # -> the handler's result
    client.publish(session, "Greeted", name="Ann")              # -> the stored Event
    for event in client.events(session): ...                    # follows, resumes by seq

Each endpoint method names its operation in the protocol's endpoint table
(``llmgine_daemon.protocol.endpoints``): the HTTP method, the path and the answer's model come
from there, and the body sent is the operation's request model (``CommandCreate``, ...), never
a dict built here. tests/api/test_endpoints.py fails when a method and the table disagree.

The endpoint methods of webhooks and schedules are in ``client_hooks.py`` (``HookEndpoints``,
inherited by Client), the same way. Where the daemon is: ``target.py`` (re-exported here).
``AsyncClient`` (aclient.py) has every method as a coroutine, generated from these.

Exceptions: ``llmgine_cli.errors`` (re-exported here), one class per API error code under
``ApiError``, all under ``LlmgineError``; the tree is drawn in that module's docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from llmgine_daemon.protocol import (
    AfterPolicy,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    Batch,
    BatchCreate,
    BatchMode,
    Command,
    CommandCreate,
    CommandHandlerCreate,
    CommandList,
    ConfigView,
    DbStats,
    Engine,
    EngineCreate,
    EngineExecute,
    EngineList,
    EngineMessageList,
    EngineReset,
    EngineTypeList,
    Event,
    EventCreate,
    EventHandlerCreate,
    EventList,
    Handler,
    HandlerList,
    Health,
    LogCreate,
    LogLevel,
    LogList,
    LogRecord,
    MetricsSnapshot,
    SecretInfo,
    SecretList,
    SecretSet,
    Session,
    SessionCreate,
    SessionList,
    SessionTokenCreated,
    ShutdownAccepted,
    Status,
    Tool,
    ToolCreate,
    ToolExecute,
    ToolList,
    ToolResult,
    TraceList,
    TraceView,
    VacuumResult,
)
from llmgine_daemon.protocol.endpoints import BY_NAME as ENDPOINTS

from llmgine_cli.client_agents import AgentEndpoints
from llmgine_cli.client_hooks import HookEndpoints
from llmgine_cli.client_verbs import (  # noqa: F401  (LONG_POLL_S, SessionRef: re-exported)
    LONG_POLL_S,
    SANDBOX_DEADLINE,
    BusVerbs,
    SessionRef,
    _id,
    _outcome,
    _scoped,
    _seg,
    _sid,
    _source,
    _wait,
)
from llmgine_cli.errors import (  # noqa: F401  (re-exported: the client's public names)
    ApiError,
    DaemonError,
    DaemonTimeout,
    DaemonUnreachable,
    InvalidArgument,
    InvalidURL,
    LlmgineError,
    ProtocolError,
    RequestTimeout,
    TransportError,
    api_error,
    command_error,
)
from llmgine_cli.target import (  # noqa: F401  (re-exported)
    DEFAULT_TCP_PORT,
    Target,
    connect_host,
    default_target,
    parse_url,
    resolve_target,
)
from llmgine_cli.transport import (  # noqa: F401  (re-exported)
    DEFAULT_TIMEOUT,
    USER_AGENT,
    HTTPTransport,
    error_from_response,
    segment,
)

T = TypeVar("T")

_TABLE: Any = object()  # Client._op: decode as the endpoint table says


class _AnyHealth(Health):
    """GET /api/health as a daemon of any version answers it: ``uptime`` is whole seconds, an
    integer, but daemons before that sent a float, and the CLI talks to a daemon of another
    version (it warns, then goes on): `llmgine health`, and the probe of `daemon start`, must
    not call its answer unexpected. A Health: only ``uptime`` may be a float."""

    uptime: int | float


# -- the client --------------------------------------------------------------------------


class Client(BusVerbs, HookEndpoints, AgentEndpoints, HTTPTransport):
    """One method per endpoint; each returns a protocol model or raises an LlmgineError.
    Connection, credentials and error decoding are HTTPTransport's (transport.py).

    Each method names its endpoint in the protocol's table (protocol/endpoints.py), which
    gives the HTTP method, the path and the answer's model, and sends the endpoint's request
    model; tests/api/test_endpoints.py holds every method to the table."""

    def _op(self, name: str, *, path: Mapping[str, str] | None = None, type_: Any = _TABLE, **kwargs: Any) -> Any:
        """Call the endpoint ``name`` (its operationId) with ``path``'s values in its path;
        the answer is decoded as the endpoint's model (or ``type_``)."""
        endpoint = ENDPOINTS[name]
        url = endpoint.url(**{k: _seg(v) for k, v in (path or {}).items()})
        return self._call(endpoint.method, url, endpoint.response if type_ is _TABLE else type_, **kwargs)

    def _held(self, name: str, path: Mapping[str, str], wait: float, **kwargs: Any) -> Any:
        """``_op`` for an operation the daemon holds up to ``wait`` seconds for its work to end."""
        return self._op(name, path=path, query=_wait(wait), wait=wait, **kwargs)

    # -- system --------------------------------------------------------------------------

    def health(self) -> Health:
        health: Health = self._op("getHealth", type_=_AnyHealth)
        return health

    def status(self) -> Status:
        return self._op("getStatus")

    def config(self) -> ConfigView:
        return self._op("getConfig")

    def shutdown(self) -> ShutdownAccepted:
        return self._op("shutdownDaemon")

    # -- db ------------------------------------------------------------------------------

    def db_stats(self) -> DbStats:
        return self._op("getDbStats")

    def db_vacuum(self) -> VacuumResult:
        return self._op("vacuumDb")

    # -- sessions ------------------------------------------------------------------------

    def create_session(
        self, name: str | None = None, metadata: dict[str, Any] | None = None, *, if_exists: str | None = None
    ) -> Session:
        """``if_exists`` (with ``name``): ``reuse`` returns the active session of that name, ``error``
        raises CONFLICT; default: another session of that name."""
        body = SessionCreate(name=name, metadata=metadata or {})
        return self._op("createSession", body=body, query={"if_exists": if_exists})

    def list_sessions(self, *, limit: int = 50, offset: int = 0, status: str | None = None) -> SessionList:
        return self._op("listSessions", query={"limit": limit, "offset": offset, "status": status})

    def get_session(self, session_id: str) -> Session:
        return self._op("getSession", path={"session_id": _id(session_id)})

    def delete_session(self, session_id: str, *, purge: bool = False) -> Session | None:
        path = {"session_id": _id(session_id)}
        if purge:  # 204: no body
            return self._op("deleteSession", path=path, type_=None, query={"purge": "true"})
        return self._op("deleteSession", path=path)

    def create_session_token(self, session_id: str) -> SessionTokenCreated:
        return self._op("createSessionToken", path={"session_id": _id(session_id)})

    # -- auth keys -----------------------------------------------------------------------

    def create_key(
        self,
        name: str | None = None,
        *,
        expires_in: int | None = None,
        expires_at: str | None = None,
    ) -> ApiKeyCreated:
        body = ApiKeyCreate(name=name, expires_in=expires_in, expires_at=expires_at)
        return self._op("createApiKey", body=body)

    def list_keys(self) -> ApiKeyList:
        return self._op("listApiKeys")

    def get_key(self, key_id: str) -> ApiKeyInfo:
        return self._op("getApiKey", path={"key_id": key_id})

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        return self._op("revokeApiKey", path={"key_id": key_id})

    # -- secrets (api/secrets.py): values go in, never come back --------------------------------

    def set_secret(self, name: str, value: str) -> SecretInfo:
        return self._op("setSecret", path={"secret": name}, body=SecretSet(value))

    def list_secrets(self) -> SecretList:
        return self._op("listSecrets")

    def delete_secret(self, name: str) -> None:
        return self._op("deleteSecret", path={"secret": name})

    # -- commands (api/commands.py) ---------------------------------------------------------
    # ``wait`` holds the request up to that many seconds for the work to finish; the socket
    # timeout is stretched by as much, so a long poll is never mistaken for a dead daemon.

    def submit_command(
        self,
        session_id: str,
        command_type: str,
        parameters: dict[str, Any],
        metadata: dict[str, Any],
        *,
        wait: float = 0,
        idempotency_key: str | None = None,
        after: Sequence[str] = (),
        after_policy: AfterPolicy = "completed",
    ) -> Command:
        """``after``: run only once these commands ended (``blocked`` until then)."""
        body = CommandCreate(
            command_type=command_type,
            parameters=parameters,
            metadata=metadata,
            after=list(after),
            after_policy=after_policy,
        )
        path = {"session_id": _id(session_id)}
        return self._held("executeCommand", path, wait, body=body, idempotency_key=idempotency_key)

    def get_command(self, session_id: str, command_id: str, *, wait: float = 0) -> Command:
        return self._held("getCommand", {"session_id": _id(session_id), "command_id": command_id}, wait)

    def list_commands(
        self,
        session_id: str,
        *,
        status: str | None = None,
        command_type: str | None = None,
        batch_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        dead: bool = False,
    ) -> CommandList:
        query = {
            "status": status,
            "command_type": command_type,
            "batch_id": batch_id,
            "limit": limit,
            "offset": offset,
            "dead": "true" if dead else None,
        }
        return self._op("listCommands", path={"session_id": _id(session_id)}, query=query)

    def cancel_command(self, session_id: str, command_id: str) -> Command:
        return self._op("cancelCommand", path={"session_id": _id(session_id), "command_id": command_id})

    def submit_batch(
        self,
        session_id: str,
        commands: Sequence[CommandCreate | Mapping[str, Any]],
        *,
        mode: BatchMode = "parallel",
        stop_on_error: bool = False,
        wait: float = 0,
        idempotency_key: str | None = None,
    ) -> Batch:
        """``commands``: CommandCreate models, or {command_type, parameters, metadata} as read
        from a file. Those are sent as given: the daemon checks every member and names the
        bad one (``details.index``), which a check here could not do better."""
        body = BatchCreate(
            commands=list(commands),
            mode=mode,  # type: ignore[arg-type]
            stop_on_error=stop_on_error,
        )
        path = {"session_id": _id(session_id)}
        return self._held("executeBatch", path, wait, body=body, idempotency_key=idempotency_key)

    def get_batch(self, session_id: str, batch_id: str, *, wait: float = 0) -> Batch:
        return self._held("getBatch", {"session_id": _id(session_id), "batch_id": batch_id}, wait)

    # -- events (api/events.py) --------------------------------------------------------------

    def publish_event(self, session_id: str, event_type: str, data: dict[str, Any], metadata: dict[str, Any]) -> Event:
        body = EventCreate(event_type=event_type, data=data, metadata=metadata)
        return self._op("publishEvent", path={"session_id": _id(session_id)}, body=body)

    def list_events(
        self,
        session_id: str,
        *,
        event_type: str | None = None,
        after: int | None = None,
        since: str | None = None,
        until: str | None = None,
        source: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> EventList:
        query = {
            "event_type": event_type,
            "after": after,
            "since": since,
            "until": until,
            "source": source,
            "limit": limit,
            "offset": offset,
        }
        return self._op("listEvents", path={"session_id": _id(session_id)}, query=query)

    def get_event(self, session_id: str, event_id: str) -> Event:
        return self._op("getEvent", path={"session_id": _id(session_id), "event_id": event_id})

    # -- engines (api/engines.py) ------------------------------------------------------------

    def engine_types(self) -> EngineTypeList:
        return self._op("listEngineTypes")

    def create_engine(
        self, engine_type: str, session_id: str, model_name: str | None, configuration: dict[str, Any]
    ) -> Engine:
        body = EngineCreate(
            engine_type=engine_type, session_id=_id(session_id), model_name=model_name, configuration=configuration
        )
        return self._op("createEngine", body=body)

    def list_engines(
        self, *, session_id: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> EngineList:
        query = {"session_id": session_id, "status": status, "limit": limit, "offset": offset}
        return self._op("listEngines", query=query)

    def get_engine(self, engine_id: str) -> Engine:
        return self._op("getEngine", path={"engine_id": engine_id})

    def delete_engine(self, engine_id: str) -> Engine:
        return self._op("deleteEngine", path={"engine_id": engine_id})

    def execute_engine(
        self,
        engine_id: str,
        prompt: str,
        parameters: dict[str, Any],
        metadata: dict[str, Any],
        *,
        wait: float = 0,
        idempotency_key: str | None = None,
    ) -> Command:
        body = EngineExecute(prompt=prompt, parameters=parameters, metadata=metadata)
        return self._op(
            "executeEngine",
            path={"engine_id": engine_id},
            body=body,
            query={"wait": f"{wait:g}"},
            wait=wait,
            idempotency_key=idempotency_key,
        )

    def reset_engine(self, engine_id: str) -> EngineReset:
        return self._op("resetEngine", path={"engine_id": engine_id})

    # -- tools (api/tools.py) ----------------------------------------------------------------

    def register_tool(
        self,
        session_id: SessionRef,
        function_code: Callable[..., Any] | str,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout: float | None = None,
        replace: bool = False,
        requires_approval: bool = False,
    ) -> Tool:
        """``function_code``: Python source, or a function (its source is sent)."""
        body = ToolCreate(
            function_code=_source(function_code),
            name=name,
            description=description,
            parameters=parameters,
            timeout=timeout,
            requires_approval=requires_approval,
        )
        return self._op(
            "registerTool",
            path={"session_id": _id(session_id)},
            body=body,
            query={"replace": "true" if replace else None},
        )

    def list_tools(self, session_id: str) -> ToolList:
        return self._op("listTools", path={"session_id": _id(session_id)})

    def get_tool(self, session_id: str, name: str) -> Tool:
        return self._op("getTool", path={"session_id": _id(session_id), "name": name})

    def execute_tool(
        self,
        session_id: str,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> ToolResult:
        """Run a tool; waits as long as the call may run in the sandbox (``timeout``, else the
        tool's own, else the daemon's ``sandbox.deadline``) plus the client's own timeout, so
        a call that overruns comes back as the daemon's TIMEOUT result, not a client timeout."""
        deadline = timeout if timeout is not None else self.tool_deadline(session_id, name)
        return self._op(
            "executeTool",
            path={"session_id": _id(session_id), "name": name},
            body=ToolExecute(arguments=arguments, timeout=timeout),
            wait=deadline,
        )

    def delete_tool(self, session_id: str, name: str) -> None:
        return self._op("deleteTool", path={"session_id": _id(session_id), "name": name})

    # -- handlers (api/handlers.py); session_id None = the global scope ----------------------

    def register_command_handler(
        self,
        session_id: SessionRef | None,
        command_type: str,
        handler_function: Callable[..., Any] | str,
        *,
        timeout: float | None = None,
        replace: bool = False,
    ) -> Handler:
        """The bus's ``register_command_handler(CommandType, handler, session_id)`` over the
        API: a function's source is sent (inspect.getsource) and runs in the sandbox."""
        body = CommandHandlerCreate(
            command_type=command_type, handler_function=_source(handler_function), timeout=timeout
        )
        name, path = _scoped("registerCommandHandler", session_id)
        return self._op(name, path=path, body=body, query={"replace": "true" if replace else None})

    def register_event_handler(
        self,
        session_id: SessionRef | None,
        event_type: str,
        handler_function: Callable[..., Any] | str,
        *,
        priority: int = 100,
        timeout: float | None = None,
        replace: bool = False,
    ) -> Handler:
        """``replace``: the scope's event handlers of ``event_type`` are removed first."""
        body = EventHandlerCreate(
            event_type=event_type, handler_function=_source(handler_function), priority=priority, timeout=timeout
        )
        name, path = _scoped("registerEventHandler", session_id)
        return self._op(name, path=path, body=body, query={"replace": "true" if replace else None})

    def list_handlers(self, session_id: str | None, *, kind: str | None = None) -> HandlerList:
        name, path = _scoped("listHandlers", session_id)
        return self._op(name, path=path, query={"kind": kind})

    def get_handler(self, session_id: str | None, handler_id: str) -> Handler:
        name, path = _scoped("getHandler", session_id, handler_id=handler_id)
        return self._op(name, path=path)

    # -- observability -------------------------------------------------------------------

    def logs(
        self,
        *,
        level: str | None = None,
        session_id: str | None = None,
        command_id: str | None = None,
        trace_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        q: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> LogList:
        query = {
            "level": level,
            "session_id": session_id,
            "command_id": command_id,
            "trace_id": trace_id,
            "since": since,
            "until": until,
            "q": q,
            "after": after,
            "limit": limit,
        }
        return self._op("listLogs", query=query)

    def post_log(
        self,
        message: str,
        *,
        level: LogLevel = "info",
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> LogRecord:
        body = LogCreate(message=message, level=level, metadata=metadata or {}, session_id=session_id)
        return self._op("createLog", body=body)

    def metrics(self, session_id: str | None = None) -> MetricsSnapshot:
        return self._op("getMetrics", query={"session_id": session_id})

    def trace(self, trace_id: str) -> TraceView:
        return self._op("getTrace", path={"trace_id": trace_id})

    def traces(
        self,
        *,
        session_id: str | None = None,
        since: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> TraceList:
        query = {"session_id": session_id, "since": since, "status": status, "limit": limit}
        return self._op("listTraces", query=query)

    # -- engine conversations (api/engine_memory.py) -------------------------------------

    def engine_messages(self, engine_id: str, *, limit: int = 100, offset: int = 0) -> EngineMessageList:
        return self._op("listEngineMessages", path={"engine_id": engine_id}, query={"limit": limit, "offset": offset})

    def delete_command_handler(self, session_id: SessionRef | None, command_type: str) -> None:
        name, path = _scoped("deleteCommandHandler", session_id, type=command_type)
        return self._op(name, path=path)

    def delete_event_handler(self, session_id: SessionRef | None, event_type: str) -> None:
        """Every event handler of the type in the scope."""
        name, path = _scoped("deleteEventHandlers", session_id, type=event_type)
        return self._op(name, path=path)

    # -- the API itself ----------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        return self._op("getOpenApiDocument")

    def prometheus_metrics(self) -> str:
        return self._op("getPrometheusMetrics")


def __getattr__(name: str) -> Any:
    if name == "UnixHTTPConnection":  # re-exported, imported (with http.client) only if used
        from llmgine_cli.wire import UnixHTTPConnection

        return UnixHTTPConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
