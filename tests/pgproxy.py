"""TCP proxies in front of the tests' PostgreSQL server, for what a network does to a daemon's
connections (tests/e2e/test_postgres_network.py).

- ``Blackhole`` (threads in the test process): passes bytes both ways until ``go_dark()``;
  from then on it swallows everything, on the connections it has and on new ones, which it
  accepts and never answers (a server host that went away behind a router that drops packets:
  every connect waits its whole connect_timeout).
- ``python -m tests.pgproxy UNIX_SOCKET``: the same forwarding as a process of its own, from
  TCP on 127.0.0.1 (a free port, printed on the first line) to the server's Unix socket. Run
  in a network namespace of its own (``unshare -n``), it is the only way in or out of that
  namespace's loopback: ``ip link set lo down`` there makes the path between a daemon in the
  namespace and the server silently dead (packets dropped, nobody told), which no proxy in
  user space can do, since the kernel answers TCP keepalives itself.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable


class Dark(threading.Event):
    """Set: nothing passes any more. ``swallowed``: what was sent meanwhile (both ways)."""

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = bytearray()


def _pipe(src: socket.socket, dst: socket.socket, dark: Dark) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            if dark.is_set():
                dark.swallowed += data
            else:
                dst.sendall(data)
    if not dark.is_set():
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def forward(listener: socket.socket, upstream: Callable[[], socket.socket], dark: Dark) -> None:
    """Accept on ``listener`` and pass each connection's bytes to a new ``upstream()`` and back;
    while ``dark`` is set, accepted connections are held and never answered."""
    held: list[socket.socket] = []
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        if dark.is_set():
            held.append(client)
            continue
        server = upstream()
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=_pipe, args=(a, b, dark), daemon=True).start()


class Blackhole:
    def __init__(self, target: tuple[str, int]) -> None:
        self.dark = Dark()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(
            target=forward, args=(self.sock, lambda: socket.create_connection(target), self.dark), daemon=True
        ).start()

    def go_dark(self) -> None:
        self.dark.set()

    def close(self) -> None:
        self.sock.close()


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    forward(listener, lambda: _unix(sys.argv[1]), Dark())


if __name__ == "__main__":
    main()
