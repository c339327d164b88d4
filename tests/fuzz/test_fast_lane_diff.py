"""Differential fuzzing of the fast lane (daemon/api/fastlane.py): mutated requests, byte by
byte, sent to a daemon with the lane and to one without it; both must answer alike.

Each case is a valid event publish or command submission, mutated by a seeded random choice of
operators (a byte inserted, deleted or replaced in the head, a header repeated or re-cased, a
Content-Length off by one or oddly written, an unusual header added, the request line or the
body changed), followed on the same connection by a plain ``GET /api/health``: so a request the
lane framed differently from aiohttp (and left other bytes for the next request) shows as a
different second answer. The write side is then closed, so a request left incomplete ends
with the connection on both. Compared: the sequence of (status, error code) answered, or the
connection's end. ``LLMGINE_FUZZ_CASES`` / ``LLMGINE_FUZZ_SEED`` fuzz harder or differently.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator

import pytest

from tests.e2e.test_fast_lane import (
    COMMAND,
    EVENT,
    MAX_BODY,
    Node,
    publish,
    read_answer,
    start,
    stop,
    submit,
    taken,
)

pytestmark = [pytest.mark.e2e]

CASES = int(os.environ.get("LLMGINE_FUZZ_CASES", "1500"))
SEED = int(os.environ.get("LLMGINE_FUZZ_SEED", "1807"))
ODD = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b":", b",", b";", b"\x7f", b"\x80", b"\xc3\xa9", b"%", b"/", b"."]
EXTRA = [
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Connection: Keep-Alive",
    b"Expect: 100-continue",
    b"Content-Type: text/plain",
    b"Content-Type: application/json; charset=latin-1",
    b"Content-Type: application/vnd.api+json",
    b"Host: evil.example",
    b"Authorization: Bearer lgk_nope_nope",
    b"Authorization: Basic eDp5",
    b"Prefer: wait=1",
    b"Content-Encoding: gzip",
    b"Upgrade: websocket",
    b"Idempotency-Key: fuzz",
    b"TE: trailers",
    b"Origin: http://127.0.0.1",
    b"X-Request-ID: fuzz-1",
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"Content-Length: 0",
    b"content-length: 5",
    b" Host: 127.0.0.1",
    b"Host : 127.0.0.1",
    b"X-Folded: a\r\n b",
]
TARGETS = [
    b"/api/sessions/{sid}/events/",
    b"//api/sessions/{sid}/events",
    b"/api/sessions/{sid}%2Fevents",
    b"/api/sessions/{sid}/%65vents",
    b"/api/sessions/{sid}/events?wait=1",
    b"/api/sessions/{sid}/commands?wait=01",
    b"/api/sessions/{sid}/commands?wait=1.5",
    b"/api/sessions/{sid}/commands?wait=1e1",
    b"/api/sessions/{sid}/commands?wait=",
    b"/api/sessions/{sid}/commands?wait=300.0000001",
    b"/api/sessions/{sid}/commands?x=1&wait=1",
    b"/api/sessions/{sid}/commands#frag",
    b"http://127.0.0.1/api/sessions/{sid}/events",
    b"/api/sessions/{sid}/../{sid}/events",
    b"/api/sessions/./{sid}/events",
]
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# After the case and HEALTH: a last request that closes the connection, then empty lines (which
# a parser skips before a request, and a server waiting for more of a body takes as body): every
# case ends with the connection closed by the daemon, none waits for bytes that never come.
CLOSER = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" + b"\r\n" * 2048


def mutate(rng: random.Random, request: bytes, sid: str) -> bytes:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        if op == 0:  # insert an odd byte in the head
            joined = b"\r\n".join(lines)
            at = rng.randrange(len(joined))
            lines = (joined[:at] + rng.choice(ODD) + joined[at:]).split(b"\r\n")
        elif op == 1:  # delete a byte of the head
            joined = b"\r\n".join(lines)
            at = rng.randrange(len(joined))
            lines = (joined[:at] + joined[at + 1 :]).split(b"\r\n")
        elif op == 2 and len(lines) > 1:  # repeat a header line
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(lines[1:]))
        elif op == 3:  # change the case of a line's first part
            i = rng.randrange(len(lines))
            name, sep, rest = lines[i].partition(b":" if i else b" ")
            lines[i] = rng.choice([name.lower(), name.upper(), name.swapcase()]) + sep + rest
        elif op == 4:  # an odd Content-Length
            n = len(body)
            value = rng.choice([n - 1, n + 1, f"0{n}", f"+{n}", f" {n} ", f"{n},{n}", "-1", f"{n}.0", "0x10"])
            lines = [x for x in lines if not x.lower().startswith(b"content-length:")]
            lines.append(b"Content-Length: " + str(value).encode())
        elif op == 5:  # an unusual header
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(EXTRA))
        elif op == 6:  # another target
            method = rng.choice([b"POST", b"post", b"PUT", b"POST "])
            version = rng.choice([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"http/1.1"])
            lines[0] = b" ".join([method, rng.choice(TARGETS).replace(b"{sid}", sid.encode()), version])
        elif op == 7:  # the body changed (its length kept right)
            body = rng.choice(
                [body[: rng.randrange(len(body) + 1)], body + b" ", b"[]", b"null", b"{}", body.replace(b'"', b"'")]
            )
            lines = [x for x in lines if not x.lower().startswith(b"content-length:")]
            lines.append(b"Content-Length: " + str(len(body)).encode())
        elif op == 8:  # bare LF line ends
            lines = [b"\n".join(lines)]
        else:  # a header's value with odd bytes
            i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
            lines[i] = lines[i] + rng.choice(ODD) + b"x"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answers(port: int, data: bytes) -> list[tuple[int, str] | str]:
    """What the daemon answered to ``data`` + CLOSER: (status, error code) each, then how the
    connection ended."""
    got: list[tuple[int, str] | str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data + CLOSER)
        buffer = bytearray()
        for _ in range(4):
            try:
                answer = read_answer(sock, buffer)
            except (ConnectionError, AssertionError):
                got.append("reset")
                break
            except TimeoutError:
                got.append("no answer")
                break
            if answer is None:
                got.append("closed")
                break
            code = ""
            if answer.body.startswith(b"{"):
                value = json.loads(answer.body)
                if isinstance(value, dict) and "request_id" in value and isinstance(value.get("error"), dict):
                    code = value["error"]["code"]
            got.append((answer.status, code))
    return got


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Node, Node]]:
    settings = {
        "LLMGINE_MAX_BODY_SIZE": str(MAX_BODY),
        "LLMGINE_RATE_LIMIT_AUTHENTICATED": "0",
        "LLMGINE_RATE_LIMIT_UNAUTHENTICATED": "0",
    }
    nodes: list[Node] = []
    try:
        nodes.append(start(settings))
        nodes.append(start({**settings, "LLMGINE_FAST_LANE": "false"}))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            stop(node)


def base_requests(node: Node) -> list[bytes]:
    auth = {"Host": "127.0.0.1", "Content-Type": "application/json", "Authorization": f"Bearer {node.key}"}
    return [publish(node.sid, EVENT, auth), submit(node.sid, COMMAND, auth, "?wait=5")]


def test_mutated_requests_are_answered_alike(pair: tuple[Node, Node]) -> None:
    fast, slow = pair
    # Both daemons get the same case: their keys and session ids differ, so each mutation is
    # drawn once (on the fast daemon's request) and applied to each daemon's own by the same
    # random choices (a generator seeded per case).
    differ: list[str] = []
    for case in range(CASES):
        seen = []
        for node in (fast, slow):
            rng = random.Random(SEED * 1_000_003 + case)
            request = rng.choice(base_requests(node))
            mutated = mutate(rng, request, node.sid)
            assert node.daemon.port is not None
            seen.append((mutated, answers(node.daemon.port, mutated + HEALTH)))
        if seen[0][1] != seen[1][1]:
            differ.append(f"case {case}: {seen[0][0]!r}\n  lane: {seen[0][1]}\n  aiohttp: {seen[1][1]}")
    assert not differ, "\n".join(differ[:10])


def test_the_lane_takes_the_unmutated_requests(pair: tuple[Node, Node]) -> None:
    # (the fuzzing above means something only if the requests it mutates are the lane's)
    fast, _ = pair
    assert fast.daemon.port is not None
    before = taken(fast)
    for request in base_requests(fast):
        assert answers(fast.daemon.port, request + HEALTH)[1] == (200, "")
    assert taken(fast) - before == 2
