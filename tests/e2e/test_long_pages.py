"""Long pages (bus/pages.py) on a real daemon: what a client that goes away mid-page leaves."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

from tests.clitools import free_port, start_daemon, stop_process
from tests.eventually import eventually_blocking

ROUTE = 'method="GET",route="/api/sessions/{session_id}/events"'


def call(port: int, key: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the test's own daemon
        text = resp.read().decode()
        return json.loads(text) if resp.headers.get_content_type() == "application/json" else text


def test_a_client_gone_mid_page_is_a_499_not_an_internal_error(home: Path) -> None:
    # A client that went away while a long page was sent (`llmgine event list ... | head`, a
    # closed tab, any session token's holder at will) was an internal error: logged at ERROR
    # with a whole traceback, counted as a 500. It is now what any request whose client went
    # away is: a 499, nothing in the log.
    port = free_port()
    d = start_daemon(home, port=port)
    try:
        key = (home / "config" / "local.key").read_text().strip()
        sid = call(port, key, "POST", "/api/sessions", {})["session_id"]
        for _ in range(30):  # about 27 MB: more than socket buffers hold, so the daemon is mid-page
            call(port, key, "POST", f"/api/sessions/{sid}/events", {"event_type": "Big", "data": {"b": "x" * 900_000}})
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"GET /api/sessions/{sid}/events?limit=40 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\n\r\n".encode()
            )
            got = b""
            while len(got) < 100_000:  # the head and some of the page, as `| head -c` reads
                got += sock.recv(65536)
            assert got.startswith(b"HTTP/1.1 200 "), got[:200]

        def counted() -> str | None:
            lines = call(port, key, "GET", "/metrics").splitlines()
            return next((line for line in lines if line.startswith("llmgine_http_requests_total{" + ROUTE)), None)

        line = eventually_blocking(counted)
        assert 'status="499"' in line, line
        log = (home / "daemon-under-test.log").read_text()
        assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
    finally:
        stop_process(d.proc)
    assert d.proc.returncode == 0


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's bytes, and whether its last (empty) chunk came."""
    out, rest = b"", body
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            return out, True
        out, rest = out + rest[:size], rest[size + 2 :]
    return out, False


def test_a_batch_purged_while_its_answer_is_sent_still_lists_every_command(home: Path) -> None:
    # A batch's answer past PAGE_BYTES is sent part by part, each part read when the one before
    # is written. Its session purged in between, the later parts found no rows and the answer
    # ended there: a whole, valid answer whose status and usage were those of all its commands
    # but that listed only some of them. The commands gone are now answered with the state
    # read with the first part, as a wait for commands answers them.
    port = free_port()
    d = start_daemon(home, port=port, env={"LLMGINE_MAX_BODY_SIZE": str(32 * 2**20)})
    try:
        key = (home / "config" / "local.key").read_text().strip()
        sid = call(port, key, "POST", "/api/sessions", {})["session_id"]
        call(port, key, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        member = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "p" * 400_000}}
        batch = call(port, key, "POST", f"/api/sessions/{sid}/commands/batch?wait=60", {"commands": [member] * 40})
        ids = [c["command_id"] for c in batch["commands"]]
        assert batch["status"] == "finished" and len(ids) == 40  # about 16 MB of records: two parts
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"GET /api/sessions/{sid}/batches/{batch['batch_id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode()
            )
            got = b""
            while len(got) < 100_000:  # the head and some of the first part; the rest waits
                got += sock.recv(65536)
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/sessions/{sid}?purge=true",
                method="DELETE",
                headers={"Authorization": f"Bearer {key}"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the test's own daemon
                assert resp.status in (200, 204)
            while chunk := sock.recv(1 << 20):
                got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower(), head
        text, whole = _dechunk(body)
        assert whole
        answer = json.loads(text)
        assert answer["status"] == "finished"
        assert [c["command_id"] for c in answer["commands"]] == ids
        assert {c["status"] for c in answer["commands"]} == {"completed"}
        log = (home / "daemon-under-test.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        stop_process(d.proc)
    assert d.proc.returncode == 0
