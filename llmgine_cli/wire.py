"""A small HTTP/1.1 client over a plain socket (AF_UNIX or TCP): one request per connection.

The CLI's request/response calls need nothing more, and ``http.client`` costs a tenth of a
whole `llmgine` call to import (it pulls in email.parser, and through it a dozen modules).
The request is written in one ``sendall``; the answer is read to its Content-Length, through
chunked framing, or to the end of the connection (``Connection: close`` is always sent).
No TLS: the daemon speaks plain HTTP (a Unix socket, or TCP on loopback by default).

The event stream (stream.py) reads an open-ended answer line by line and keeps using
``http.client``, through ``UnixHTTPConnection`` below, which is imported only there.
"""

from __future__ import annotations

import functools
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAX_HEADER_BYTES = 64 * 1024


# Seconds: about 31 years; sockets take at most ~9.2e9 (their clock is int64 nanoseconds).
LONGEST_TIMEOUT = 1e9


class BadResponse(Exception):
    """The bytes that came back are not an HTTP/1.1 answer (or it ended half-way)."""


class Answer:
    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # names lower-cased
        self.body = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def connect(socket_path: str | None, host: str | None, port: int | None, timeout: float | None) -> socket.socket:
    """A connected socket with ``timeout`` on every operation (OSError/TimeoutError if not)."""
    if timeout is not None and timeout > LONGEST_TIMEOUT:
        timeout = LONGEST_TIMEOUT  # a socket refuses more (OverflowError): --timeout 1e10 means "wait"
    if socket_path is not None:
        return _connect_unix(socket_path, timeout)
    sock = socket.create_connection((host or "127.0.0.1", port or 80), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_unix(path: str, timeout: float | None) -> socket.socket:
    """Connect to a Unix socket. A daemon whose backlog of connections not yet accepted is
    full refuses with EAGAIN at once when the socket has a timeout (a Unix socket never
    answers "in progress"): it is there, only busy, so it is asked again until ``timeout``
    (shell scripts running many calls at once took it for "no daemon", and started one)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.002
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if deadline is not None and time.monotonic() + pause > deadline:
                raise TimeoutError(f"{path}: the daemon accepted no connection in {timeout:g} s") from None
        except BaseException:
            sock.close()
            raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def exchange(
    sock: socket.socket,
    method: str,
    target: str,
    host: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> Answer:
    """Send one request on ``sock`` and read the whole answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock.sendall(head + (body or b""))
    reader = _Reader(sock)
    answer = _read_head(reader)
    if method == "HEAD" or answer.status in (204, 304) or 100 <= answer.status < 200:
        return answer
    if answer.headers.get("transfer-encoding", "").lower() == "chunked":
        answer.body = _read_chunked(reader)
    elif "content-length" in answer.headers:
        try:
            length = int(answer.headers["content-length"])
        except ValueError:
            raise BadResponse(f"bad Content-Length {answer.headers['content-length']!r}") from None
        answer.body = reader.exactly(length)
    else:
        answer.body = reader.rest()
    return answer


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                return line
            if len(self.buf) > MAX_HEADER_BYTES:
                raise BadResponse("header line too long")
            if not self._more():
                raise BadResponse("the connection closed before the answer ended")

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise BadResponse("the connection closed before the answer ended")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self) -> bytes:
        while self._more():
            pass
        data, self.buf = self.buf, b""
        return data


def _read_head(reader: _Reader) -> Answer:
    while True:
        status_line = reader.line().decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise BadResponse(f"not an HTTP answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        size = 0
        while line := reader.line():
            size += len(line)
            if size > MAX_HEADER_BYTES:
                raise BadResponse("headers too long")
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        answer = Answer(int(code), reason, headers)
        if answer.status != 100:  # "100 Continue" is followed by the real answer
            return answer


def _read_chunked(reader: _Reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = reader.line().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while reader.line():  # trailers
                pass
            return b"".join(parts)
        parts.append(reader.exactly(size))
        if reader.line():
            raise BadResponse("chunk not followed by CRLF")


def __getattr__(name: str) -> Any:
    if name == "UnixHTTPConnection":
        return _unix_http_connection_class()
    raise AttributeError(name)


@functools.cache
def _unix_http_connection_class() -> type:
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        def __init__(self, path: str, timeout: float) -> None:
            # The Host header is required by HTTP/1.1 and meaningless on a socket.
            super().__init__("localhost", timeout=timeout)
            self.socket_path = path

        def connect(self) -> None:
            self.sock = connect(self.socket_path, None, None, self.timeout)

    return UnixHTTPConnection
