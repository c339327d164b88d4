"""AsyncClient: the Client's methods as coroutines, over asyncio streams.

    async with AsyncClient() as client:
        session = await client.create_session(name="demo")
        result = await client.execute(session, "DummyEngineCommand", prompt="Hello")
        async for event in client.events(session):
            ...

Every endpoint method of ``Client`` exists here with the same name, arguments and result
(awaited): it is generated from the Client method, which is called once with a stand-in
``self`` that records the request instead of sending it. So the two can never disagree about
paths, bodies or result types, and a method added to Client is here too.

The transport is HTTP/1.1 written with asyncio's own streams (Unix socket or TCP, one
connection per request), not aiohttp: ``import llmgine_cli`` must stay cheap for the CLI,
and a request/response client needs no more than this. Errors are the same exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, Event

from llmgine_cli.client import LONG_POLL_S, Client, SessionRef, _outcome, _sid
from llmgine_cli.errors import DaemonUnreachable, ProtocolError, RequestTimeout


@dataclass
class _Request:
    method: str
    path: str
    type_: Any
    query: Mapping[str, Any] | None
    body: Any
    wait: float
    idempotency_key: str | None


class _Recorder:
    """Stands in for a Client: ``_call`` returns the request instead of sending it."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(
        self,
        method: str,
        path: str,
        type_: Any,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        wait: float = 0,
        idempotency_key: str | None = None,
    ) -> _Request:
        return _Request(method, path, type_, query, body, wait, idempotency_key)

    def __getattr__(self, name: str) -> Any:
        # Methods that delegate to another endpoint method (delete_handlers ->
        # delete_command_handler) record that one's request.
        attr = getattr(Client, name)
        if callable(attr):
            return functools.partial(attr, self)
        return getattr(self._client, name)


class AsyncClient:
    """The Client's endpoints as coroutines (see the module docstring)."""

    def __init__(self, url: Any = None, **options: Any) -> None:
        # Resolution, credentials, headers and error decoding are the Client's; only the
        # bytes travel differently. No auto-start here: that is the CLI's business.
        options.pop("on_unreachable", None)
        self._sync = Client(url, **options)
        self._recorder = _Recorder(self._sync)

    @property
    def url(self) -> str:
        return self._sync.url

    @property
    def target(self) -> Any:
        return self._sync.target

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    if TYPE_CHECKING:  # generated below, from Client; named here for the type checker

        async def submit_command(self, *args: Any, **kwargs: Any) -> Command: ...
        async def get_command(self, *args: Any, **kwargs: Any) -> Command: ...

    # -- the methods that are more than one request ----------------------------------------

    async def execute(self, session_id: SessionRef, command_type: str, /, **parameters: Any) -> Any:
        """As ``Client.execute``: run the command, return its result or raise its error."""
        record: Command = await self.submit_command(_sid(session_id), command_type, parameters, {}, wait=LONG_POLL_S)
        while record.status not in TERMINAL_STATUSES:
            record = await self.get_command(record.session_id, record.command_id, wait=LONG_POLL_S)
        return _outcome(record)

    async def events(
        self,
        session_id: SessionRef | None = None,
        *,
        event_types: Sequence[str] = (),
        sources: Sequence[str] = (),
        since: int | str | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """As ``Client.events``: the synchronous iterator, driven from a worker thread so the
        event loop is never blocked while it waits for the next event."""
        iterator = self._sync.events(
            session_id, event_types=event_types, sources=sources, since=since, reconnect=reconnect
        )
        done = object()
        while True:
            event = await asyncio.to_thread(next, iterator, done)
            if event is done:
                return
            yield event  # type: ignore[misc]

    # -- transport ---------------------------------------------------------------------------

    async def _send(self, request: _Request) -> Any:
        client = self._sync
        path, payload = client._target_path(request.path, request.query), None
        if request.body is not None:
            import msgspec

            payload = msgspec.json.encode(request.body)
        extra = {"Idempotency-Key": request.idempotency_key} if request.idempotency_key else {}
        headers = client._headers(payload, extra)
        timeout = client.timeout + request.wait
        status, reason, answer_headers, data = await self._exchange(request.method, path, headers, payload, timeout)
        data = client._finish(status, reason, lambda name: answer_headers.get(name.lower()), data)
        return client._decode(request.method, request.path, request.type_, data)

    async def _exchange(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        payload: bytes | None,
        timeout: float,
    ) -> tuple[int, str, dict[str, str], bytes]:
        target = self._sync.target
        url = self._sync.url
        try:
            async with asyncio.timeout(timeout):
                try:
                    if target.socket_path is not None:
                        reader, writer = await asyncio.open_unix_connection(target.socket_path)
                    else:
                        reader, writer = await asyncio.open_connection(target.host, target.port)
                except OSError as exc:
                    raise DaemonUnreachable(
                        f"cannot connect to {url}: {exc.strerror or exc}", url, before_send=True
                    ) from None
                try:
                    host = "localhost" if target.socket_path else f"{target.host}:{target.port}"
                    lines = [
                        f"{method} {path} HTTP/1.1",
                        f"Host: {host}",
                        "Connection: close",
                        f"Content-Length: {len(payload or b'')}",
                    ]
                    lines += [f"{k}: {v}" for k, v in headers.items()]
                    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (payload or b""))
                    await writer.drain()
                    return await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise DaemonUnreachable(f"lost the connection to {url}: {exc}", url, before_send=False) from None
                finally:
                    writer.close()
        except TimeoutError:
            raise RequestTimeout(f"no answer from {url} within {timeout:g}s", url) from None


async def _line(reader: asyncio.StreamReader) -> str:
    """One line of the answer's head; the connection ended before it did: lost (as Client's
    wire.py says), never an answer that is not HTTP or a head that ended there."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)
    return line.decode("latin-1").rstrip("\r\n")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str], bytes]:
    status_line = await _line(reader)
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while line := await _line(reader):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):  # the connection ended before the last chunk: lost
                raise asyncio.IncompleteReadError(line, None)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {line[:20]!r}") from None
            if not size:
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body


def _coroutine_of(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        request = method(self._recorder, *args, **kwargs)
        if not isinstance(request, _Request):
            raise TypeError(f"Client.{name} is not a single request; AsyncClient must define it")
        return await self._send(request)

    return call


def _endpoint_methods() -> dict[str, Callable[..., Any]]:
    own = {name for name, _ in inspect.getmembers(AsyncClient) if not name.startswith("_")}
    return {
        name: fn
        for name, fn in inspect.getmembers(Client, inspect.isfunction)
        if not name.startswith("_") and name not in own
    }


for _name, _method in _endpoint_methods().items():
    setattr(AsyncClient, _name, _coroutine_of(_name, _method))
