"""The fast lane (daemon/api/fastlane.py): event publishes over TCP answered below aiohttp's
Request must be answered as aiohttp's path answers them, and whatever is not plainly one must
reach aiohttp as it came.

Two real daemons side by side, one with ``server.fast_lane`` (the default) and one without; the
same raw bytes go to both, and the answers are compared: status, error code, header names,
the event. Then what only the fast lane's connection handling can get wrong: pipelined requests
answered in order, a request in pieces, the idle timeout, a rate limit, a stop under load (and
more in tests/e2e/test_fast_lane_connections.py)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests import clitools
from tests.dbtools import open_home_db
from tests.e2e.test_shutdown import closed_loop, run_then_exit_0
from tests.eventually import eventually, eventually_blocking

pytestmark = pytest.mark.e2e

MAX_BODY = 4096


@dataclass
class Node:
    daemon: clitools.Daemon
    key: str
    sid: str
    ended: str
    token: str
    other_token: str


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, buffer: bytearray) -> Answer | None:
    """One HTTP/1.1 answer (Content-Length framed) from ``sock``; None if it closed first."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} twice: {head!r}"
        headers[name.lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    buffer[:] = rest[length:]
    return Answer(int(lines[0].split()[1]), headers, rest[:length])


def exchange(port: int, *pieces: bytes, answers: int = 1, pause: float = 0.0) -> list[Answer]:
    """Send ``pieces`` (``pause`` seconds apart) on one connection; read ``answers`` answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for i, piece in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            sock.sendall(piece)
        buffer = bytearray()
        got = [read_answer(sock, buffer) for _ in range(answers)]
    assert all(a is not None for a in got), got
    return [a for a in got if a is not None]


def publish(sid: str, body: bytes, headers: dict[str, str], path_tail: str = "", what: str = "events") -> bytes:
    lines = [f"POST /api/sessions/{sid}/{what}{path_tail} HTTP/1.1", *[f"{k}: {v}" for k, v in headers.items()]]
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode("utf-8") + body


def submit(sid: str, body: bytes, headers: dict[str, str], query: str = "?wait=30") -> bytes:
    return publish(sid, body, headers, query, what="commands")


def api(node: Node, method: str, path: str, body: Any = None, key: str | None = None) -> Answer:
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key or node.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    port = node.daemon.port
    assert port is not None
    return exchange(port, head.encode() + data)[0]


def start(env: dict[str, str]) -> Node:
    """A daemon on TCP with a session (and a DummyEngine), an ended session and two session
    tokens; stopped again if any of that fails (a set-up that failed left daemons running)."""
    home = clitools.short_home()
    daemon = clitools.start_daemon(home, port=clitools.free_port(), env=env)
    key = (home / "config" / "local.key").read_text().strip()
    node = Node(daemon, key, "", "", "", "")
    try:
        node.sid = api(node, "POST", "/api/sessions", {}).json()["session_id"]
        engine = {"engine_type": "DummyEngine", "session_id": node.sid}
        assert api(node, "POST", "/api/engines", engine).status == 201
        node.ended = api(node, "POST", "/api/sessions", {}).json()["session_id"]
        assert api(node, "DELETE", f"/api/sessions/{node.ended}").status == 200
        other = api(node, "POST", "/api/sessions", {}).json()["session_id"]
        node.token = api(node, "POST", f"/api/sessions/{node.sid}/token", {}).json()["session_token"]
        node.other_token = api(node, "POST", f"/api/sessions/{other}/token", {}).json()["session_token"]
    except BaseException:
        stop(node)
        raise
    return node


def stop(node: Node) -> None:
    clitools.stop_process(node.daemon.proc)
    shutil.rmtree(node.daemon.home, ignore_errors=True)


@pytest.fixture(scope="module")
def pair(module_backend_env: Callable[[], dict[str, str]]) -> Iterator[tuple[Node, Node]]:
    """(with the fast lane, without it), on databases of their own."""
    settings = {"LLMGINE_MAX_BODY_SIZE": str(MAX_BODY), "LLMGINE_RATE_LIMIT_AUTHENTICATED": "100000"}
    nodes: list[Node] = []
    try:
        nodes.append(start({**settings, **module_backend_env()}))
        nodes.append(start({**settings, **module_backend_env(), "LLMGINE_FAST_LANE": "false"}))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            stop(node)


EVENT = b'{"event_type": "order.paid", "data": {"total": 3}, "metadata": {"source": "webhook"}}'
COMMAND = b'{"command_type": "DummyEngineCommand", "parameters": {"prompt": "hello"}}'
PLAIN = {"Host": "127.0.0.1", "Content-Type": "application/json"}


def deep(levels: int) -> bytes:
    return b'{"event_type": "a", "data": {"x": ' + b"[" * levels + b"]" * levels + b"}}"


# name -> the request, made for a node (its key, sessions and tokens).
CASES: dict[str, Callable[[Node], bytes]] = {
    "plain": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "no content type": lambda n: publish(n.sid, EVENT, {"Host": "127.0.0.1", "Authorization": f"Bearer {n.key}"}),
    "charset": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Content-Type": "application/json; charset=utf-8", "Authorization": f"Bearer {n.key}"}
    ),
    "lower-case bearer, spaces": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "authorization": f"bearer   {n.key}  ", "connection": "keep-alive"}
    ),
    "own session token": lambda n: publish(n.sid, EVENT, {**PLAIN, "X-Session-Token": n.token}),
    "own token as bearer": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.token}"}),
    "another session's token": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.other_token}"}),
    "no credential": lambda n: publish(n.sid, EVENT, PLAIN),
    "a wrong key": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": "Bearer lgk_0123456789ab_nope"}),
    "basic auth": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": "Basic dXNlcjpwYXNz"}),
    "empty session token": lambda n: publish(n.sid, EVENT, {**PLAIN, "X-Session-Token": ""}),
    "a Host not allowed": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Host": "evil.example", "Authorization": f"Bearer {n.key}"}
    ),
    "no Host": lambda n: publish(
        n.sid, EVENT, {"Content-Type": "application/json", "Authorization": f"Bearer {n.key}"}
    ),
    "an Origin": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Origin": "http://evil.example", "Authorization": f"Bearer {n.key}"}
    ),
    "a form": lambda n: publish(
        n.sid,
        b"event_type=a",
        {**PLAIN, "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {n.key}"},
    ),
    "malformed JSON": lambda n: publish(n.sid, b'{"event_type":', {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "empty body": lambda n: publish(n.sid, b"", {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "a bad event type": lambda n: publish(
        n.sid, b'{"event_type": "1bad"}', {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "an unknown field": lambda n: publish(
        n.sid, b'{"event_type": "a", "nope": 1}', {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "too deep": lambda n: publish(n.sid, deep(200), {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "too large": lambda n: publish(
        n.sid,
        b'{"event_type": "a", "data": {"x": "' + b"y" * MAX_BODY + b'"}}',
        {**PLAIN, "Authorization": f"Bearer {n.key}"},
    ),
    "an unknown session": lambda n: publish(
        "01a20000-0000-7000-8000-000000000000", EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "an ended session": lambda n: publish(n.ended, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "an identifier with ..": lambda n: publish("a..b", EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "a query string": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?x=1"),
    "an Idempotency-Key": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Idempotency-Key": "k-1", "Authorization": f"Bearer {n.key}"}
    ),
    "a request id": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "X-Request-ID": "req-123", "Authorization": f"Bearer {n.key}"}
    ),
    "a request id not taken": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "X-Request-ID": "has space", "Authorization": f"Bearer {n.key}"}
    ),
    "a traceparent": lambda n: publish(
        n.sid,
        EVENT,
        {
            **PLAIN,
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "Authorization": f"Bearer {n.key}",
        },
    ),
    "a UTF-8 header value": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "X-Note": "caf\u00e9", "Authorization": f"Bearer {n.key}"}
    ),
    "Expect: 100-continue": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Expect": "100-continue", "Authorization": f"Bearer {n.key}"}
    ),
    "Connection: close": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Connection": "close", "Authorization": f"Bearer {n.key}"}
    ),
    "a repeated Content-Type": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "content-type": "application/json", "Authorization": f"Bearer {n.key}"}
    ),
    "many header lines": lambda n: publish(
        n.sid, EVENT, {**PLAIN, **{f"X-Pad-{i}": "x" for i in range(40)}, "Authorization": f"Bearer {n.key}"}
    ),
    "a header line over the limit": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "X-Pad": "x" * 9000, "Authorization": f"Bearer {n.key}"}
    ),
    "absolute-form target": lambda n: publish(
        f"x/../../api/sessions/{n.sid}", EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "command": lambda n: submit(n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "command, no wait": lambda n: submit(n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, ""),
    "command, wait=0": lambda n: submit(n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?wait=0"),
    "command, wait=2.5": lambda n: submit(n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?wait=2.5"),
    "command, wait too long": lambda n: submit(
        n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?wait=301"
    ),
    "command, wait not a number": lambda n: submit(
        n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?wait=soon"
    ),
    "command, wait twice": lambda n: submit(
        n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}, "?wait=1&wait=30"
    ),
    "command, Prefer": lambda n: submit(
        n.sid, COMMAND, {**PLAIN, "Prefer": "wait=30", "Authorization": f"Bearer {n.key}"}, ""
    ),
    "command, own session token": lambda n: submit(n.sid, COMMAND, {**PLAIN, "X-Session-Token": n.token}),
    "command, another session's token": lambda n: submit(
        n.sid, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.other_token}"}
    ),
    "command, unknown type": lambda n: submit(
        n.sid, b'{"command_type": "NopeCommand"}', {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "command, daemon's metadata": lambda n: submit(
        n.sid,
        b'{"command_type": "DummyEngineCommand", "metadata": {"_depth": 3}}',
        {**PLAIN, "Authorization": f"Bearer {n.key}"},
    ),
    "command, a bad timeout": lambda n: submit(
        n.sid, b'{"command_type": "DummyEngineCommand", "timeout": -1}', {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "command, unknown session": lambda n: submit(
        "01a20000-0000-7000-8000-000000000000", COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "command, an ended session": lambda n: submit(n.ended, COMMAND, {**PLAIN, "Authorization": f"Bearer {n.key}"}),
    "a NUL in a text": lambda n: publish(
        n.sid, b'{"event_type": "a", "data": {"x": "a\\u0000b"}}', {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "Content-Length with leading zeros": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ).replace(b"Content-Length: ", b"Content-Length: 000"),
    "Content-Length with a sign": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ).replace(b"Content-Length: ", b"Content-Length: +"),
    "Content-Length twice": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "content-length": str(len(EVENT)), "Authorization": f"Bearer {n.key}"}
    ),
    "a space before a colon": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}).replace(
        b"Content-Length:", b"Content-Length :"
    ),
    "a bare LF": lambda n: publish(n.sid, EVENT, {**PLAIN, "X-A": "a\nX-B: b", "Authorization": f"Bearer {n.key}"}),
    "a NUL in a header": lambda n: publish(n.sid, EVENT, {**PLAIN, "X-A": "a\0b", "Authorization": f"Bearer {n.key}"}),
    "a folded header": lambda n: publish(n.sid, EVENT, {**PLAIN, "X-A": "a\r\n b", "Authorization": f"Bearer {n.key}"}),
    "HTTP/1.0": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}).replace(
        b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1
    ),
    "a percent-encoded path": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}).replace(
        b"/events ", b"/%65vents ", 1
    ),
    "a Host with the port": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Host": f"127.0.0.1:{n.daemon.port}", "Authorization": f"Bearer {n.key}"}
    ),
    "a key, and another session's token": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}", "X-Session-Token": n.other_token}
    ),
    "another session's token, and a key": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "X-Session-Token": n.token, "Authorization": f"Bearer {n.other_token}"}
    ),
    "Bearer and a tab": lambda n: publish(n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer\t{n.key}"}),
    "a byte order mark": lambda n: publish(
        n.sid, b"\xef\xbb\xbf" + EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}"}
    ),
    "a second Authorization": lambda n: publish(
        n.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {n.key}", "authorization": "Bearer nope"}
    ),
    "chunked": lambda n: (
        (
            f"POST /api/sessions/{n.sid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {n.key}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{len(EVENT):x}\r\n"
        ).encode()
        + EVENT
        + b"\r\n0\r\n\r\n"
    ),
}
# The record's fields that are its own (ids, times).
OWN_FIELDS = {
    "event_id",
    "command_id",
    "session_id",
    "timestamp",
    "trace_id",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The headers whose values are the request's own (compared by name only).
OWN = {"date", "x-request-id", "traceparent", "ratelimit", "content-length"}


def comparable(answer: Answer, early: bool = False) -> dict[str, Any]:
    """What two answers to the same request share. ``early``: a command answered without
    waiting (no wait, or wait=0), which may or may not have finished by then: that is timing
    (on PostgreSQL a command starts once its submission has committed), not a difference
    between the paths, so its status (200 or 202) and the record's end are left out."""
    shown: dict[str, Any] = {
        "status": answer.status,
        "headers": sorted(answer.headers),
        "values": {k: v for k, v in answer.headers.items() if k not in OWN},
    }
    body = answer.json() if answer.body else None
    if isinstance(body, dict) and "request_id" in body and isinstance(body.get("error"), dict):
        error = body["error"]
        shown["error"] = {
            "code": error["code"],
            "message": UUID.sub("<id>", error["message"]),
            "details": sorted(error.get("details") or {}),
        }
    elif isinstance(body, dict):
        shown["record"] = {k: UUID.sub("<id>", json.dumps(v)) for k, v in body.items() if k not in OWN_FIELDS}
        if early and answer.status in (200, 202):
            shown["status"] = "200 or 202"
            for key in ("status", "result", "usage"):
                shown["record"].pop(key, None)
    return shown


# Commands answered without waiting for them (see ``comparable``).
EARLY = {"command, no wait", "command, wait=0"}
# The cases the fast lane answers itself (every other one must reach aiohttp as it came).
TAKEN = {
    "plain",
    "no content type",
    "charset",
    "lower-case bearer, spaces",
    "own session token",
    "own token as bearer",
    "an unknown session",
    "an ended session",
    "a request id",
    "a request id not taken",
    "a traceparent",
    "command",
    "command, no wait",
    "command, wait=0",
    "command, wait=2.5",
    "command, own session token",
    "command, unknown type",
    "command, unknown session",
    "command, an ended session",
    "a NUL in a text",
    "Content-Length with leading zeros",
    "a Host with the port",
    "a key, and another session's token",
}


def taken(node: Node) -> int:
    """The fast lane's count of requests it took (its metric)."""
    text = api(node, "GET", "/metrics").body.decode()
    found = re.search(r"^llmgine_http_fast_lane_requests_total (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


@pytest.mark.parametrize("case", list(CASES))
def test_answered_as_aiohttp_answers(pair: tuple[Node, Node], case: str) -> None:
    fast, slow = pair
    before = taken(fast)
    got = []
    for node in (fast, slow):
        assert node.daemon.port is not None
        got.append(exchange(node.daemon.port, CASES[case](node))[0])
    early = case in EARLY
    assert comparable(got[0], early) == comparable(got[1], early)
    assert taken(fast) - before == (1 if case in TAKEN else 0)
    assert taken(slow) == 0
    answer = got[0]
    assert answer.headers["x-llmgine-version"]
    if case == "a request id":
        assert answer.headers["x-request-id"] == "req-123"
    if case == "a traceparent":
        assert answer.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert answer.json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    record = answer.json() if answer.status in (200, 201, 202) else {}
    if "event_id" in record:  # stored, in the session's log, as answered
        listed = api(fast, "GET", f"/api/sessions/{record['session_id']}/events/{record['event_id']}").json()
        assert listed == record
    if "command_id" in record:
        listed = api(fast, "GET", f"/api/sessions/{record['session_id']}/commands/{record['command_id']}?wait=30")
        assert listed.json()["status"] == "completed"
        if answer.status == 200:
            assert listed.json() == record


def test_pipelined_requests_are_answered_in_order(pair: tuple[Node, Node]) -> None:
    fast, _ = pair
    auth = {**PLAIN, "Authorization": f"Bearer {fast.key}"}
    marks = [f"p{i}" for i in range(6)]
    requests = [publish(fast.sid, json.dumps({"event_type": "pipe", "data": {"m": m}}).encode(), auth) for m in marks]
    get = f"GET /api/sessions/{fast.sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {fast.key}\r\n\r\n"
    # three fast ones, a GET (aiohttp's from then on), two more publishes: all in one write
    stream = b"".join(requests[:3]) + get.encode() + b"".join(requests[3:5])
    assert fast.daemon.port is not None
    answers = exchange(fast.daemon.port, stream, answers=6)
    assert [a.status for a in answers] == [201, 201, 201, 200, 201, 201]
    assert [a.json()["data"]["m"] for a in answers if a.status == 201] == marks[:5]
    seqs = [a.json()["seq"] for a in answers if a.status == 201]
    assert seqs == sorted(seqs)
    # and a request in two pieces (its head, then its body a moment later)
    request = requests[5]
    cut = request.index(b"\r\n\r\n") + 4
    (answer,) = exchange(fast.daemon.port, request[:cut], request[cut:], pause=0.2)
    assert answer.status == 201 and answer.json()["data"]["m"] == "p5"


def test_a_client_that_pipelines_much_and_reads_late_gets_every_answer_in_order(pair: tuple[Node, Node]) -> None:
    # Requests arriving while one is in flight, or while the client reads nothing, are kept
    # (reading pauses past a bound, as on aiohttp's path) and answered in order.
    fast, _ = pair
    auth = {**PLAIN, "Authorization": f"Bearer {fast.key}"}
    count = 3000
    stream = b"".join(
        publish(fast.sid, json.dumps({"event_type": "flood", "data": {"n": n, "pad": "p" * 2000}}).encode(), auth)
        for n in range(count)
    )
    assert fast.daemon.port is not None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the daemon's writes back up soon
        sock.settimeout(60)
        sock.connect(("127.0.0.1", fast.daemon.port))
        sender = threading.Thread(target=sock.sendall, args=(stream,))
        sender.start()
        time.sleep(1)  # nothing read meanwhile: the daemon must stop writing, then reading
        buffer = bytearray()
        answers = [read_answer(sock, buffer) for _ in range(count)]
        sender.join(60)
    assert [a.json()["data"]["n"] if a is not None else None for a in answers] == list(range(count))


@pytest.mark.sqlite_only(reason="connection handling: storage plays no part")
def test_the_idle_timeout_counts_from_the_last_answer() -> None:
    # aiohttp's idle timer starts at accept; requests it does not see must push it on, and the
    # connection must still close once idle for server.read_timeout.
    node = start({"LLMGINE_READ_TIMEOUT": "1"})
    try:
        port = node.daemon.port
        assert port is not None
        request = publish(node.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {node.key}"})
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            buffer = bytearray()
            began = time.monotonic()
            while time.monotonic() - began < 2.5:  # past the timer set at accept
                sock.sendall(request)
                answer = read_answer(sock, buffer)
                assert answer is not None and answer.status == 201
                time.sleep(0.3)
            idle = time.monotonic()
            assert read_answer(sock, buffer) is None  # closed by the daemon...
            assert time.monotonic() - idle < 10  # ...after about a second without a request
    finally:
        stop(node)


@pytest.mark.sqlite_only(reason="rate limits: storage plays no part")
def test_a_rate_limit_is_charged_once_and_refused_as_aiohttp_refuses() -> None:
    nodes = [start({"LLMGINE_RATE_LIMIT_AUTHENTICATED": "8"})]
    try:
        nodes.append(start({"LLMGINE_RATE_LIMIT_AUTHENTICATED": "8", "LLMGINE_FAST_LANE": "false"}))
        runs = []
        for node in nodes:
            assert node.daemon.port is not None
            request = publish(node.sid, EVENT, {**PLAIN, "Authorization": f"Bearer {node.key}"})
            answers = exchange(node.daemon.port, request * 8, answers=8)
            runs.append([(a.status, a.headers.get("ratelimit", "").split(";")[1]) for a in answers])
            assert answers[-1].headers["retry-after"]
        # the set-up's seven requests took seven of the eight: one published, then refusals
        assert runs[0] == runs[1]
        assert [status for status, _ in runs[0]] == [201, 429, 429, 429, 429, 429, 429, 429]
    finally:
        for node in nodes:
            stop(node)


@pytest.mark.sqlite_only(reason="the stop's drain: storage plays no part (test_shutdown covers both)")
def test_a_stop_answers_what_the_fast_lane_took() -> None:
    node = start({})
    seen: dict[str, list[str]] = {"acknowledged": [], "unanswered": [], "told to close": []}

    async def scenario() -> None:
        sids = [api(node, "POST", "/api/sessions", {}).json()["session_id"] for _ in range(16)]
        assert node.daemon.port is not None
        port = node.daemon.port

        def request(sid: str, body: bytes) -> bytes:
            return publish(sid, body, {**PLAIN, "Authorization": f"Bearer {node.key}"})

        clients = [
            asyncio.create_task(closed_loop(lambda: asyncio.open_connection("127.0.0.1", port), request, sid, seen))
            for sid in sids
        ]
        await eventually(lambda: len(seen["acknowledged"]) >= 200, timeout=60, message="the load under way")
        node.daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 60)

    try:
        run_then_exit_0(node.daemon.proc, scenario)
        assert seen["unanswered"] == [] and len(seen["told to close"]) == 16, {k: len(v) for k, v in seen.items()}
        with open_home_db(node.daemon.home) as db:
            rows = db.execute("SELECT data FROM events WHERE event_type = 'Load'").fetchall()
        assert set(seen["acknowledged"]) <= {json.loads(row[0])["mark"] for row in rows}
    finally:
        stop(node)


@pytest.mark.sqlite_only(reason="the stop's grace period: storage plays no part")
@pytest.mark.parametrize("lane", ["true", "false"])
def test_a_stop_lets_a_waiting_command_finish_and_answers_it(lane: str) -> None:
    # aiohttp's stop gives the requests it is handling server.shutdown_timeout to finish; a
    # request the fast lane took must get the same, not a closed connection.
    node = start({"LLMGINE_SHUTDOWN_TIMEOUT": "30", "LLMGINE_FAST_LANE": lane})
    try:
        assert node.daemon.port is not None
        body = json.dumps({"command_type": "DummyEngineCommand", "parameters": {"prompt": "x", "delay_ms": 2000}})
        request = submit(node.sid, body.encode(), {**PLAIN, "Authorization": f"Bearer {node.key}"}, "?wait=60")
        with socket.create_connection(("127.0.0.1", node.daemon.port), timeout=60) as sock:
            sock.sendall(request)
            with open_home_db(node.daemon.home) as db:
                eventually_blocking(
                    lambda: db.execute("SELECT count(*) FROM commands WHERE status = 'executing'").fetchone()[0] == 1,
                    timeout=30,
                    message="the command running",
                )
            node.daemon.proc.send_signal(signal.SIGTERM)
            answer = read_answer(sock, bytearray())
        assert answer is not None, "no answer: the connection was closed under the request"
        assert answer.status == 200 and answer.json()["status"] == "completed"
        assert answer.headers.get("connection") == "close"
        assert node.daemon.proc.wait(60) == 0
    finally:
        stop(node)
