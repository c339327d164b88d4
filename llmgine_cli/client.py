"""Client: one method per llmgined endpoint, over a Unix socket or TCP.

Standard library only (plus msgspec and the daemon's protocol module): importing aiohttp costs
more than a whole request/response CLI call, so the CLI never pays for it.

    client = Client()                    # where: the url argument, LLMGINE_URL, the local socket
    session = client.create_session(name="demo")
    client.register_command_handler(session, "Greet", greet)   # greet's source is sent
    client.execute(session, "Greet", name="Ann")                # -> the handler's result
    client.publish(session, "Greeted", name="Ann")              # -> the stored Event
    for event in client.events(session): ...                    # follows, resumes by seq

Where the daemon is: ``target.py`` (re-exported here). ``AsyncClient`` (aclient.py) has every
method as a coroutine, generated from these.

Exceptions: ``llmgine_cli.errors`` (re-exported here), one class per API error code under
``ApiError``, all under ``LlmgineError``; the tree is drawn in that module's docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from llmgine_daemon.protocol import (
    TERMINAL_STATUSES,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    Batch,
    Command,
    CommandList,
    ConfigView,
    DbStats,
    Engine,
    EngineList,
    EngineMessageList,
    EngineReset,
    EngineTypeList,
    Event,
    EventList,
    Handler,
    HandlerList,
    Health,
    LogCreate,
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
    ToolList,
    ToolResult,
    TraceList,
    TraceView,
    VacuumResult,
)

from llmgine_cli.errors import (  # noqa: F401  (re-exported: the client's public names)
    ApiError,
    DaemonError,
    DaemonTimeout,
    DaemonUnreachable,
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

# Each long poll asks the daemon to hold the answer this long (execute() polls until done).
LONG_POLL_S = 25.0
# The daemon's default sandbox.deadline, if its configuration cannot be read.
SANDBOX_DEADLINE = 30.0


# -- the client --------------------------------------------------------------------------


class Client(HTTPTransport):
    """One method per endpoint; each returns a protocol model or raises an LlmgineError.
    Connection, credentials and error decoding are HTTPTransport's (transport.py)."""

    # -- system --------------------------------------------------------------------------

    def health(self) -> Health:
        return self._call("GET", "/api/health", Health)

    def status(self) -> Status:
        return self._call("GET", "/api/status", Status)

    def config(self) -> ConfigView:
        return self._call("GET", "/api/config", ConfigView)

    def shutdown(self) -> ShutdownAccepted:
        return self._call("POST", "/api/shutdown", ShutdownAccepted, body={})

    # -- db ------------------------------------------------------------------------------

    def db_stats(self) -> DbStats:
        return self._call("GET", "/api/db/stats", DbStats)

    def db_vacuum(self) -> VacuumResult:
        return self._call("POST", "/api/db/vacuum", VacuumResult, body={})

    # -- sessions ------------------------------------------------------------------------

    def create_session(
        self, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        body = SessionCreate(name=name, metadata=metadata or {})
        return self._call("POST", "/api/sessions", Session, body=body)

    def list_sessions(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None
    ) -> SessionList:
        query = {"limit": limit, "offset": offset, "status": status}
        return self._call("GET", "/api/sessions", SessionList, query=query)

    def get_session(self, session_id: str) -> Session:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}", Session)

    def delete_session(self, session_id: str, *, purge: bool = False) -> Session | None:
        path = f"/api/sessions/{_sid(session_id)}"
        if purge:
            return self._call("DELETE", path, None, query={"purge": "true"})
        return self._call("DELETE", path, Session)

    def create_session_token(self, session_id: str) -> SessionTokenCreated:
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/token", SessionTokenCreated,
                          body={})

    # -- auth keys -----------------------------------------------------------------------

    def create_key(
        self, name: str | None = None, *, expires_in: int | None = None,
        expires_at: str | None = None,
    ) -> ApiKeyCreated:
        body = ApiKeyCreate(name=name, expires_in=expires_in, expires_at=expires_at)
        return self._call("POST", "/api/auth/keys", ApiKeyCreated, body=body)

    def list_keys(self) -> ApiKeyList:
        return self._call("GET", "/api/auth/keys", ApiKeyList)

    def get_key(self, key_id: str) -> ApiKeyInfo:
        return self._call("GET", f"/api/auth/keys/{_seg(key_id)}", ApiKeyInfo)

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        return self._call("DELETE", f"/api/auth/keys/{_seg(key_id)}", ApiKeyInfo)

    # -- secrets (api/secrets.py): values go in, never come back --------------------------------

    def set_secret(self, name: str, value: str) -> SecretInfo:
        return self._call("PUT", f"/api/secrets/{_seg(name)}", SecretInfo, body=SecretSet(value))

    def list_secrets(self) -> SecretList:
        return self._call("GET", "/api/secrets", SecretList)

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", f"/api/secrets/{_seg(name)}", None)

    # -- commands (api/commands.py) ---------------------------------------------------------
    # ``wait`` holds the request up to that many seconds for the work to finish; the socket
    # timeout is stretched by as much, so a long poll is never mistaken for a dead daemon.

    def submit_command(
        self, session_id: str, command_type: str, parameters: dict[str, Any],
        metadata: dict[str, Any], *, wait: float = 0, idempotency_key: str | None = None,
    ) -> Command:
        body = {"command_type": command_type, "parameters": parameters, "metadata": metadata}
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/commands", Command,
                          body=body, query=_wait(wait), wait=wait, idempotency_key=idempotency_key)

    def get_command(self, session_id: str, command_id: str, *, wait: float = 0) -> Command:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/commands/{_seg(command_id)}",
                          Command, query=_wait(wait), wait=wait)

    def list_commands(
        self, session_id: str, *, status: str | None = None, command_type: str | None = None,
        batch_id: str | None = None, limit: int = 50, offset: int = 0,
    ) -> CommandList:
        query = {"status": status, "command_type": command_type, "batch_id": batch_id,
                 "limit": limit, "offset": offset}
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/commands", CommandList, query=query)

    def cancel_command(self, session_id: str, command_id: str) -> Command:
        path = f"/api/sessions/{_sid(session_id)}/commands/{_seg(command_id)}/cancel"
        return self._call("POST", path, Command, body={})

    def submit_batch(
        self, session_id: str, commands: list[dict[str, Any]], *, mode: str = "parallel",
        stop_on_error: bool = False, wait: float = 0, idempotency_key: str | None = None,
    ) -> Batch:
        body = {"commands": commands, "mode": mode, "stop_on_error": stop_on_error}
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/commands/batch", Batch,
                          body=body, query=_wait(wait), wait=wait, idempotency_key=idempotency_key)

    def get_batch(self, session_id: str, batch_id: str, *, wait: float = 0) -> Batch:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/batches/{_seg(batch_id)}",
                          Batch, query=_wait(wait), wait=wait)

    # -- events (api/events.py) --------------------------------------------------------------

    def publish_event(
        self, session_id: str, event_type: str, data: dict[str, Any], metadata: dict[str, Any]
    ) -> Event:
        body = {"event_type": event_type, "data": data, "metadata": metadata}
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/events", Event, body=body)

    def list_events(
        self, session_id: str, *, event_type: str | None = None, after: int | None = None,
        since: str | None = None, until: str | None = None, source: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> EventList:
        query = {"event_type": event_type, "after": after, "since": since, "until": until,
                 "source": source, "limit": limit, "offset": offset}
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/events", EventList, query=query)

    def get_event(self, session_id: str, event_id: str) -> Event:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/events/{_seg(event_id)}", Event)

    # -- engines (api/engines.py) ------------------------------------------------------------

    def engine_types(self) -> EngineTypeList:
        return self._call("GET", "/api/engines/types", EngineTypeList)

    def create_engine(
        self, engine_type: str, session_id: str, model_name: str | None, configuration: dict[str, Any]
    ) -> Engine:
        body = {"engine_type": engine_type, "session_id": session_id, "model_name": model_name,
                "configuration": configuration}
        return self._call("POST", "/api/engines", Engine, body=body)

    def list_engines(
        self, *, session_id: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> EngineList:
        query = {"session_id": session_id, "status": status, "limit": limit, "offset": offset}
        return self._call("GET", "/api/engines", EngineList, query=query)

    def get_engine(self, engine_id: str) -> Engine:
        return self._call("GET", f"/api/engines/{_seg(engine_id)}", Engine)

    def delete_engine(self, engine_id: str) -> Engine:
        return self._call("DELETE", f"/api/engines/{_seg(engine_id)}", Engine)

    def execute_engine(
        self, engine_id: str, prompt: str, parameters: dict[str, Any], metadata: dict[str, Any],
        *, wait: float = 0,
    ) -> Command:
        body = {"prompt": prompt, "parameters": parameters, "metadata": metadata}
        return self._call("POST", f"/api/engines/{_seg(engine_id)}/execute", Command, body=body,
                          query={"wait": f"{wait:g}"}, wait=wait)

    def reset_engine(self, engine_id: str) -> EngineReset:
        return self._call("POST", f"/api/engines/{_seg(engine_id)}/reset", EngineReset)

    # -- tools (api/tools.py) ----------------------------------------------------------------

    def register_tool(
        self, session_id: SessionRef, function_code: Callable[..., Any] | str, *,
        name: str | None = None, description: str | None = None,
        parameters: dict[str, Any] | None = None, timeout: float | None = None,
        replace: bool = False,
    ) -> Tool:
        """``function_code``: Python source, or a function (its source is sent)."""
        session_id = _sid(session_id)
        body = {k: v for k, v in {"name": name, "description": description, "parameters": parameters,
                                  "timeout": timeout}.items() if v is not None}
        body["function_code"] = _source(function_code)
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/tools", Tool, body=body,
                          query={"replace": "true" if replace else None})

    def list_tools(self, session_id: str) -> ToolList:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/tools", ToolList)

    def get_tool(self, session_id: str, name: str) -> Tool:
        return self._call("GET", f"/api/sessions/{_sid(session_id)}/tools/{_seg(name)}", Tool)

    def execute_tool(
        self, session_id: str, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
    ) -> ToolResult:
        """Run a tool; waits as long as the call may run in the sandbox (``timeout``, else the
        tool's own, else the daemon's ``sandbox.deadline``) plus the client's own timeout, so
        a call that overruns comes back as the daemon's TIMEOUT result, not a client timeout."""
        body: dict[str, Any] = {"arguments": arguments}
        if timeout is not None:
            body["timeout"] = timeout
        deadline = timeout if timeout is not None else self.tool_deadline(session_id, name)
        return self._call("POST", f"/api/sessions/{_sid(session_id)}/tools/{_seg(name)}/execute",
                          ToolResult, body=body, wait=deadline)

    def tool_deadline(self, session_id: str, name: str) -> float:
        """How long a call of the tool may run in the sandbox: its own timeout, else the
        daemon's ``sandbox.deadline``."""
        tool = self.get_tool(session_id, name)
        if tool.timeout is not None:
            return tool.timeout
        for setting in self.config().settings:
            if setting.key == "sandbox.deadline" and isinstance(setting.value, (int, float)):
                return float(setting.value)
        return SANDBOX_DEADLINE

    def delete_tool(self, session_id: str, name: str) -> None:
        self._call("DELETE", f"/api/sessions/{_sid(session_id)}/tools/{_seg(name)}", None)

    # -- handlers (api/handlers.py); session_id None = the global scope ----------------------

    def register_command_handler(
        self, session_id: SessionRef | None, command_type: str,
        handler_function: Callable[..., Any] | str, *, timeout: float | None = None,
    ) -> Handler:
        """The bus's ``register_command_handler(CommandType, handler, session_id)`` over the
        API: a function's source is sent (inspect.getsource) and runs in the sandbox."""
        body = {"command_type": command_type, "handler_function": _source(handler_function),
                "timeout": timeout}
        return self._call("POST", f"{_handlers(session_id)}/commands", Handler, body=body)

    def register_event_handler(
        self, session_id: SessionRef | None, event_type: str,
        handler_function: Callable[..., Any] | str, *, priority: int = 100,
        timeout: float | None = None,
    ) -> Handler:
        body = {"event_type": event_type, "handler_function": _source(handler_function),
                "priority": priority,
                "timeout": timeout}
        return self._call("POST", f"{_handlers(session_id)}/events", Handler, body=body)

    def list_handlers(self, session_id: str | None, *, kind: str | None = None) -> HandlerList:
        return self._call("GET", _handlers(session_id), HandlerList, query={"kind": kind})

    def get_handler(self, session_id: str | None, handler_id: str) -> Handler:
        return self._call("GET", f"{_handlers(session_id)}/{_seg(handler_id)}", Handler)

    def delete_handlers(self, session_id: str | None, kind: str, type_: str) -> None:
        """Remove the scope's handlers of that kind for that type (all event handlers of it)."""
        plural = {"command": "commands", "event": "events"}[kind]
        self._call("DELETE", f"{_handlers(session_id)}/{plural}/{_seg(type_)}", None)

    # -- observability -------------------------------------------------------------------

    def logs(
        self, *, level: str | None = None, session_id: str | None = None,
        command_id: str | None = None, trace_id: str | None = None, since: str | None = None,
        until: str | None = None, q: str | None = None, after: int | None = None, limit: int = 100,
    ) -> LogList:
        query = {"level": level, "session_id": session_id, "command_id": command_id,
                 "trace_id": trace_id, "since": since, "until": until, "q": q, "after": after,
                 "limit": limit}
        return self._call("GET", "/api/observability/logs", LogList, query=query)

    def post_log(
        self, message: str, *, level: str = "info", metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> LogRecord:
        body = LogCreate(message=message, level=level, metadata=metadata or {},  # type: ignore[arg-type]
                         session_id=session_id)
        return self._call("POST", "/api/observability/logs", LogRecord, body=body)

    def metrics(self, session_id: str | None = None) -> MetricsSnapshot:
        return self._call("GET", "/api/observability/metrics", MetricsSnapshot,
                          query={"session_id": session_id})

    def trace(self, trace_id: str) -> TraceView:
        return self._call("GET", f"/api/observability/traces/{_seg(trace_id)}", TraceView)

    def traces(
        self, *, session_id: str | None = None, since: str | None = None,
        status: str | None = None, limit: int = 50,
    ) -> TraceList:
        query = {"session_id": session_id, "since": since, "status": status, "limit": limit}
        return self._call("GET", "/api/observability/traces", TraceList, query=query)

    # -- engine conversations (api/engine_memory.py) -------------------------------------

    def engine_messages(self, engine_id: str, *, limit: int = 100, offset: int = 0) -> EngineMessageList:
        return self._call("GET", f"/api/engines/{_seg(engine_id)}/messages", EngineMessageList,
                          query={"limit": limit, "offset": offset})

    def delete_command_handler(self, session_id: SessionRef | None, command_type: str) -> None:
        self.delete_handlers(session_id, "command", command_type)

    def delete_event_handler(self, session_id: SessionRef | None, event_type: str) -> None:
        self.delete_handlers(session_id, "event", event_type)

    # -- the API itself ----------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        return self._call("GET", "/openapi.json", dict)

    def prometheus_metrics(self) -> str:
        return self._call("GET", "/metrics", str)

    # -- the message bus, the way bus.py spelled it --------------------------------------------

    def publish(self, session_id: SessionRef, event_type: str, /, **data: Any) -> Event:
        """``bus.publish(Event(**data))``: publish ``event_type`` with ``data``."""
        return self.publish_event(_sid(session_id), event_type, data, {})

    def execute(self, session_id: SessionRef, command_type: str, /, **parameters: Any) -> Any:
        """``await bus.execute(Command(**parameters))``: run it and return its result.

        Waits as long as the command runs (its own timeout bounds it); a command that fails,
        times out or is cancelled raises the error code's class (CommandFailed, ProviderError,
        ...) with the record in ``.command``. For priority, timeout or not waiting, use
        ``submit_command``.
        """
        record = self.submit_command(_sid(session_id), command_type, parameters, {}, wait=LONG_POLL_S)
        while record.status not in TERMINAL_STATUSES:
            record = self.get_command(record.session_id, record.command_id, wait=LONG_POLL_S)
        return _outcome(record)

    def events(
        self, session_id: SessionRef | None = None, *, event_types: Sequence[str] = (),
        sources: Sequence[str] = (), since: int | str | None = None, reconnect: bool = True,
    ) -> Iterator[Event]:
        """Events as they happen, in seq order (one session, or every session with None),
        until the session ends; break out of the loop to stop earlier.

        The live stream (stream.py, Server-Sent Events, as `llmgine event tail`): it resumes
        from the last seq it handed out, so dropped connections and daemon restarts cost
        nothing and no event comes twice. ``since``: a seq to start after (0: the whole log)
        or an ISO time; default: only new events.
        """
        from llmgine_cli.stream import EventStream

        stream = EventStream(self, None if session_id is None else _sid(session_id),
                             event_types=event_types, sources=sources, since=since,
                             reconnect=reconnect)
        return (item for item in stream if isinstance(item, Event))


def __getattr__(name: str) -> Any:
    if name == "UnixHTTPConnection":  # re-exported, imported (with http.client) only if used
        from llmgine_cli.wire import UnixHTTPConnection

        return UnixHTTPConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SessionRef = Any  # a session id, or anything with a ``session_id`` (Session, Command, ...)


def _sid(session: SessionRef) -> str:
    return _seg(session if isinstance(session, str) else session.session_id)


def _handlers(session: SessionRef | None) -> str:
    return "/api/handlers" if session is None else f"/api/sessions/{_sid(session)}/handlers"


def _source(function: Callable[..., Any] | str) -> str:
    """A function's own source (dedented), or the text as given."""
    if isinstance(function, str):
        return function
    import inspect
    import textwrap

    try:
        return textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise LlmgineError(f"cannot send {function!r}: its source is not available ({exc})") from None


def _outcome(record: Command) -> Any:
    if record.status == "completed":
        return record.result
    raise command_error(record)


def _wait(seconds: float) -> dict[str, str]:
    return {"wait": f"{seconds:g}"} if seconds > 0 else {}


_seg = segment
