"""The fast lane's connection handling, beside tests/e2e/test_fast_lane.py (whose daemons and
helpers these use): the bytes a client may pipeline behind a request it took, and a mix of its
requests and aiohttp's in one stream, cut in pieces."""

from __future__ import annotations

import json
import random
import socket

import pytest

from tests.e2e.test_fast_lane import (
    COMMAND,
    PLAIN,
    Node,
    comparable,
    exchange,
    pair,  # noqa: F401 (the module's daemons: one with the fast lane, one without)
    publish,
    start,
    stop,
    submit,
    taken,
)

pytestmark = pytest.mark.e2e


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.sqlite_only(reason="connection handling: storage plays no part")
def test_bytes_pipelined_behind_a_request_in_flight_are_bounded() -> None:
    # While the fast lane answers a request, what the client sends behind it is kept, up to
    # MAX_PENDING bytes; then the connection is not read (the client's sends block), as on
    # aiohttp's path. It kept everything: 128 MB sent behind a command waiting for its result
    # grew the daemon by what the kernel's buffers did not hold (one token's holder, one
    # connection; and copied it all again on every read).
    fast = start({"LLMGINE_SHUTDOWN_TIMEOUT": "1"})  # (not waiting long for the command at the end)
    sid = fast.sid
    try:
        auth = {**PLAIN, "Authorization": f"Bearer {fast.key}"}
        slow = b'{"command_type": "DummyEngineCommand", "parameters": {"prompt": "x", "delay_ms": 5000}}'
        flood = publish(sid, json.dumps({"event_type": "flood", "data": {"pad": "p" * 4000}}).encode(), auth)
        offered = flood * (128 * 2**20 // len(flood))
        assert fast.daemon.port is not None
        before = resident_mib(fast.daemon.proc.pid)
        with socket.create_connection(("127.0.0.1", fast.daemon.port), timeout=30) as sock:
            sock.sendall(submit(sid, slow, auth, "?wait=60"))
            sock.settimeout(2)
            try:
                sock.sendall(offered)  # (the kernel's buffers take some tens of MB: not all of it)
            except TimeoutError:
                pass
            grown = resident_mib(fast.daemon.proc.pid) - before
        assert grown < 16, f"the daemon grew by {grown:.0f} MiB"
    finally:
        stop(fast)


def mixed_stream(node: Node, rnd: random.Random, count: int) -> bytes:
    """``count`` requests, most of them the fast lane's, now and then one aiohttp must answer."""
    auth = {**PLAIN, "Authorization": f"Bearer {node.key}"}
    target = f"/api/sessions/{node.sid}/events/01a20000-0000-7000-8000-000000000000"  # (404: an answer both give)
    read = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.key}\r\n\r\n"
    requests = []
    for n in range(count):
        event = json.dumps({"event_type": "mixed", "data": {"m": n}}).encode()
        requests.append(
            rnd.choice(
                [
                    read.encode(),
                    publish(node.sid, event, {**auth, "X-Session-Token": node.other_token}),
                    publish(node.sid, b'{"nope": 1}', auth),
                    publish(node.sid, event, {**PLAIN, "X-Session-Token": node.token}),
                    publish(node.sid, event, {**PLAIN, "Authorization": "Bearer lgk_0123456789ab_nope"}),
                    submit(node.sid, COMMAND, auth),
                ]
            )
            if n >= 5 and rnd.random() < 0.15
            else publish(node.sid, event, auth)
        )
    return b"".join(requests)


@pytest.mark.sqlite_only(reason="framing: storage plays no part")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_mixed_pipeline_in_pieces_is_answered_as_aiohttp_answers_it(
    pair: tuple[Node, Node],  # noqa: F811 (the fixture)
    seed: int,
) -> None:
    # The same bytes, cut at the same places, to both: the same answers in the same order
    # (every request framed alike, whichever of the two reads it).
    runs = []
    before = taken(pair[0])
    for node in pair:
        rnd = random.Random(seed)
        stream = mixed_stream(node, rnd, 40)
        cuts = sorted(rnd.sample(range(len(stream) // 3, len(stream)), 6))  # (a request cut: aiohttp's)
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert node.daemon.port is not None
        answers = exchange(node.daemon.port, *pieces, answers=40, pause=0.02)
        runs.append([comparable(a) for a in answers])
    assert runs[0] == runs[1]
    assert taken(pair[0]) - before >= 5  # (the fast lane's, then aiohttp's from the first other one)
