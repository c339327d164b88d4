"""A client that sends its requests and then shuts down its write side (``shutdown(SHUT_WR)``,
``printf ... | nc -N``, many HTTP/1.0 clients) still gets every answer, then the connection
closes: on the fast lane's routes and aiohttp's, over TCP (with and without the fast lane) and
the Unix socket. The EOF closed the connection at once (asyncio does when the protocol's
``eof_received`` says so, and aiohttp's did): the client read nothing, though the event was
stored. A body the EOF cut short is answered 400 at once instead of waiting for the read
timeout. Uses tests/e2e/test_fast_lane.py's daemons (one with the fast lane, one without)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.test_fast_lane import (
    PLAIN,
    Answer,
    Node,
    pair,  # noqa: F401 (the module's daemons: one with the fast lane, one without)
    publish,
    read_answer,
    start,
    stop,
    submit,
    taken,
)

pytestmark = pytest.mark.e2e


def connect(node: Node, where: str) -> socket.socket:
    if where == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(node.daemon.socket_url.removeprefix("unix://"))
        return sock
    assert node.daemon.port is not None
    return socket.create_connection(("127.0.0.1", node.daemon.port), timeout=20)


def half_closed(node: Node, where: str, data: bytes) -> tuple[list[Answer], float]:
    """Send ``data``, shut down the write side, read every answer until the daemon closes:
    the answers, and how long the close took."""
    with connect(node, where) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        began = time.monotonic()
        buffer = bytearray()
        answers = []
        while (answer := read_answer(sock, buffer)) is not None:
            answers.append(answer)
        assert not buffer, f"bytes after the last answer: {bytes(buffer)!r}"
        return answers, time.monotonic() - began


def get(node: Node, path: str, version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.key}\r\n\r\n".encode()


def event(node: Node, mark: str) -> bytes:
    body = json.dumps({"event_type": "half", "data": {"m": mark}}).encode()
    return publish(node.sid, body, {**PLAIN, "Authorization": f"Bearer {node.key}"})


WHERE = ["tcp, fast lane", "tcp, no fast lane", "unix"]


def node_for(pair: tuple[Node, Node], where: str) -> tuple[Node, str]:  # noqa: F811
    return (pair[1], "tcp") if where == "tcp, no fast lane" else (pair[0], where.split(",")[0])


@pytest.mark.sqlite_only(reason="connection handling: storage plays no part")
@pytest.mark.parametrize("where", WHERE)
def test_every_request_sent_before_the_eof_is_answered(pair: tuple[Node, Node], where: str) -> None:  # noqa: F811
    node, transport = node_for(pair, where)
    auth = {**PLAIN, "Authorization": f"Bearer {node.key}"}
    command = b'{"command_type": "DummyEngineCommand", "parameters": {"prompt": "hi"}}'
    body = b'{"name": "half"}'
    create = (
        f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    cases = {
        "event": (event(node, "a"), [201]),
        "command": (submit(node.sid, command, auth), [200]),
        "list": (get(node, "/api/sessions"), [200]),
        "create": (create, [201]),
        "HTTP/1.0": (get(node, f"/api/sessions/{node.sid}", "1.0"), [200]),
        # several in one write: the fast lane's, one it hands to aiohttp, then more
        # what the parser takes for an upgrade is answered too (an open WebSocket is not)
        "CONNECT": (
            f"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.key}\r\n\r\n".encode(),
            [404],
        ),
        "Upgrade": (
            get(node, "/api/sessions").replace(b"\r\n\r\n", b"\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"),
            [200],
        ),
        "pipelined": (
            event(node, "b") + event(node, "c") + get(node, "/api/sessions") + event(node, "d"),
            [201] * 2 + [200, 201],
        ),
    }
    before = taken(pair[0])
    for case, (data, statuses) in cases.items():
        answers, took = half_closed(node, transport, data)
        assert [a.status for a in answers] == statuses, (case, answers)
        assert took < 10, f"{case}: closed {took:.1f}s after the last answer"
    marks = [a.json()["data"]["m"] for a in half_closed(node, transport, event(node, "e"))[0]]
    assert marks == ["e"]
    if where == "tcp, fast lane":
        assert taken(pair[0]) - before == 5  # (a, the command, b, c, e: the fast lane's, not aiohttp's)


@pytest.mark.sqlite_only(reason="connection handling: storage plays no part")
@pytest.mark.parametrize("where", WHERE)
def test_a_body_cut_short_by_the_eof_is_refused_at_once(pair: tuple[Node, Node], where: str) -> None:  # noqa: F811
    node, transport = node_for(pair, where)
    request = event(node, "cut")
    answers, took = half_closed(node, transport, request[:-5])
    assert [a.status for a in answers] == [400]
    error = answers[0].json()["error"]
    assert error["code"] == "INVALID_JSON" and "closed its side" in error["message"]
    assert took < 5  # not the read timeout
    # an answered request, then half a head: the answer, then the close
    answers, took = half_closed(node, transport, event(node, "whole") + request[:20])
    assert [a.status for a in answers] == [201] and took < 5


@pytest.mark.sqlite_only(reason="connection handling: storage plays no part")
def test_an_event_stream_whose_client_left_frees_its_slot_at_once() -> None:
    # The EOF of a client with an event stream open (SSE) means it left: the connection closes
    # at once, as before, so the stream's slot (max_websockets, here 1) is free within the
    # sweep's half second (docs/streams.md), not at the next heartbeat's failed write.
    node = start({"LLMGINE_MAX_WEBSOCKETS": "1"})
    try:
        stream = (
            f"GET /api/sessions/{node.sid}/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {node.key}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

        def open_stream(transport: str) -> tuple[socket.socket, bytes]:
            sock = connect(node, transport)
            sock.sendall(stream)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := sock.recv(4096)):
                head += chunk
            return sock, head

        for transport in ("tcp", "unix"):
            sock, head = open_stream(transport)
            assert head.startswith(b"HTTP/1.1 200"), head
            sock.close()
            began = time.monotonic()
            while True:
                again, head = open_stream(transport)
                again.close()
                if head.startswith(b"HTTP/1.1 200"):
                    break
                assert time.monotonic() - began < 3, f"{transport}: the slot is still held: {head[:60]!r}"
                time.sleep(0.2)
            time.sleep(1)  # (the last one's slot too)
    finally:
        stop(node)
