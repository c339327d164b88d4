"""The wire under Client, AsyncClient and EventStream: where the daemon is, the connection
(Unix socket or TCP), the headers and credential every request carries, and the one way an
answer becomes a model or its typed exception. Client adds one method per endpoint.

Requests go through ``wire.py``, a small HTTP/1.1 client over a plain socket (http.client
pulls in email and friends, a tenth of a CLI call); msgspec and the protocol models are
imported only when an answer is decoded into a model, so ``-o json`` never pays for them.
"""

from __future__ import annotations

import os
import urllib.parse

from llmgine_daemon import __version__

from llmgine_cli import wire
from llmgine_cli.errors import (
    ApiError,
    DaemonUnreachable,
    ProtocolError,
    RequestTimeout,
    api_error,
)
from llmgine_cli.target import Target, resolve_target

TYPE_CHECKING = False  # typing costs a few ms to import: annotations only
if TYPE_CHECKING:
    import http.client
    from collections.abc import Callable, Mapping
    from typing import Any

DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"llmgine-cli/{__version__}"
# llmgine_daemon.protocol's names for them (tests/unit checks they agree): importing the
# protocol package costs msgspec, which a raw request does not need.
VERSION_HEADER = "X-Llmgine-Version"
REQUEST_ID_HEADER = "X-Request-ID"


def __getattr__(name: str) -> Any:
    if name == "UnixHTTPConnection":  # the http.client class the event stream uses
        from llmgine_cli.wire import UnixHTTPConnection

        return UnixHTTPConnection
    raise AttributeError(name)


def error_from_response(status: int, reason: str, data: bytes, request_id: str | None = None) -> ApiError:
    """The typed exception of the error code (SessionNotFound, ...) in an error answer."""
    import json

    try:
        envelope = json.loads(data)
        error = envelope["error"]
        code, message = error["code"], error["message"]
        details = error.get("details") or {}
        if not (isinstance(code, str) and isinstance(message, str) and isinstance(details, dict)):
            raise TypeError(code)
    except (ValueError, TypeError, KeyError):
        # Not our envelope (a proxy, or something else on that port): keep what we know.
        return api_error(status, f"HTTP_{status}", reason or "error", {}, request_id)
    return api_error(status, code, message, details, envelope.get("request_id") or request_id)


class HTTPTransport:
    """``on_unreachable`` is called once when the connection cannot even be opened (the CLI
    auto-starts the daemon there); the request is then retried once.
    ``on_version_mismatch`` is called once per client with the daemon's version.
    """

    def __init__(
        self,
        url: str | Target | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
        on_unreachable: Callable[[DaemonUnreachable], None] | None = None,
        on_version_mismatch: Callable[[str], None] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.target = url if isinstance(url, Target) else resolve_target(url, env)
        self.api_key = api_key or env.get("LLMGINE_API_KEY") or self.target.config_api_key
        self._env = env
        self.timeout = timeout
        self.on_unreachable = on_unreachable
        self.on_version_mismatch = on_version_mismatch
        self.daemon_version: str | None = None
        self._warned = False

    @property
    def url(self) -> str:
        return self.target.url

    # -- plumbing ------------------------------------------------------------------------

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
    ) -> Any:
        """One request; the answer decoded as ``type_`` (None: no body, bytes: as is)."""
        data = self._request(method, path, query=query, body=body, wait=wait, idempotency_key=idempotency_key)
        return self._decode(method, path, type_, data)

    def _call_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the answer as plain JSON values (dicts and lists), no model."""
        import json

        data = self._request(method, path, **kwargs)
        try:
            return json.loads(data) if data else None
        except ValueError as exc:
            raise ProtocolError(f"unexpected answer from {method} {path} at {self.url}: {exc}") from None

    def _decode(self, method: str, path: str, type_: Any, data: bytes) -> Any:
        if type_ is None:
            return None
        if type_ is bytes:
            return data
        if type_ is str:
            return data.decode("utf-8", "replace")
        import msgspec

        try:
            return msgspec.json.decode(data, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"unexpected answer from {method} {path} at {self.url}: {exc}") from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        wait: float = 0,
        idempotency_key: str | None = None,
    ) -> bytes:
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        timeout = self.timeout + wait
        path = self._target_path(path, query)
        payload = None if body is None else _encode(body)
        try:
            return self._send(method, path, payload, timeout, extra)
        except DaemonUnreachable as exc:
            if not exc.before_send or self.on_unreachable is None:
                raise
            hook, self.on_unreachable = self.on_unreachable, None  # only ever once
            hook(exc)
            return self._send(method, path, payload, timeout, extra)

    @staticmethod
    def _target_path(path: str, query: Mapping[str, Any] | None) -> str:
        pairs = {k: v for k, v in (query or {}).items() if v is not None}
        return f"{path}?{urllib.parse.urlencode(pairs)}" if pairs else path

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """An http.client connection (the event stream reads its answer incrementally)."""
        import http.client

        from llmgine_cli.wire import UnixHTTPConnection

        t = self.target
        timeout = self.timeout if timeout is None else timeout
        if t.socket_path is not None:
            return UnixHTTPConnection(t.socket_path, timeout)
        return http.client.HTTPConnection(t.host or "127.0.0.1", t.port, timeout=timeout)

    def _send(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> bytes:
        headers = self._headers(payload, extra_headers)
        timeout = self.timeout if timeout is None else timeout
        t = self.target
        try:
            sock = wire.connect(t.socket_path, t.host, t.port, timeout)
        except TimeoutError:
            raise RequestTimeout(f"connecting to {self.url} timed out", self.url) from None
        except OSError as exc:
            raise DaemonUnreachable(
                f"cannot connect to {self.url}: {exc.strerror or exc}",
                self.url,
                before_send=True,
            ) from None
        host = "localhost" if t.is_unix else t.url.split("://", 1)[1]
        try:
            answer = wire.exchange(sock, method, path, host, headers, payload)
        except TimeoutError:
            raise RequestTimeout(f"no answer from {self.url} within {timeout:g}s", self.url) from None
        except (OSError, wire.BadResponse) as exc:
            # The daemon went away mid-request (e.g. it is shutting down).
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DaemonUnreachable(
                f"lost the connection to {self.url}: {reason}", self.url, before_send=False
            ) from None
        finally:
            sock.close()
        return self._finish(answer.status, answer.reason, answer.header, answer.body)

    def _headers(self, payload: bytes | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(extra or {})}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        api_key = self.api_key or self._local_key()
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def _finish(self, status: int, reason: str, header: Callable[[str], str | None], data: bytes) -> bytes:
        """What every transport does with an answer: note the version, raise the error."""
        version = header(VERSION_HEADER)
        self._check_version(version)
        if status >= 400:
            error = error_from_response(status, reason, data, header(REQUEST_ID_HEADER))
            if version is None and error.code == f"HTTP_{status}":
                # Neither llmgined's header nor its envelope: another server (or a proxy's own
                # error). Its 404 was exit 4 ("not found"), which a script takes for a missing
                # session; it is an error (exit 1) that says where the answer came from.
                raise ProtocolError(
                    f"HTTP_{status}: {reason or 'error'} from {self.url}, not an answer of llmgined "
                    "(is something else listening there, or did a proxy in front of it fail?)"
                )
            raise error
        return data

    def _local_key(self) -> str | None:
        """The key llmgined wrote for the local CLI, for our own TCP daemon (localkey.py)."""
        t = self.target
        if t.is_unix:
            return None  # over the socket the kernel vouches for us
        from llmgine_cli.localkey import key_for, read_key

        if t.local_key_file is not None:
            return read_key(t.local_key_file)
        return key_for(t.host, t.port, self._env)

    def _check_version(self, version: str | None) -> None:
        if version is None:
            return
        self.daemon_version = version
        if version != __version__ and not self._warned and self.on_version_mismatch:
            self._warned = True
            self.on_version_mismatch(version)


def segment(value: str) -> str:
    """One path segment, so an id can never walk to another route ("." and ".." too, which
    quote() leaves as they are and URL normalisation would remove)."""
    if not value:
        from llmgine_cli.errors import InvalidArgument

        raise InvalidArgument("an id or name must not be empty")
    quoted = urllib.parse.quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _encode(body: Any) -> bytes:
    """A request body as JSON: plain values with the json module, models with msgspec."""
    if isinstance(body, dict) and all(isinstance(k, str) for k in body):
        import json

        try:
            return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError):
            pass  # something json cannot spell (a model inside, a NaN): msgspec decides
    import msgspec

    encoded = msgspec.json.encode(body)
    # msgspec writes NaN and Infinity as null: a value changed without a word. Look for one
    # only when a null was written (rare in a request).
    if b"null" in encoded and _non_finite(msgspec.to_builtins(body)):
        raise ValueError("NaN and Infinity are not JSON (they would be sent as null): send a number or None")
    return encoded


def _non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False
