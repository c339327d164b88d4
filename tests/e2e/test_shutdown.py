"""Graceful shutdown under load (SIGTERM to the real daemon): requests in flight are answered,
running commands finish, queued commands stay queued for the next start, every acknowledged
write is there, sandbox workers are reaped, no socket or pidfile is left behind."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.dbtools import open_home_db
from tests.e2e.test_bus_crash import DUMMY, integrity_ok, post, unix_session, wait_ready
from tests.e2e.test_llmgined import run_daemon
from tests.eventually import eventually

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def run_then_exit_0(proc: Any, scenario: Any) -> None:
    """Run ``scenario()`` (which stops the daemon ``proc``); the daemon must exit 0 (it is
    killed if it does not exit)."""
    try:
        asyncio.run(scenario())
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stored_statuses(home: Path) -> dict[str, str]:
    with open_home_db(home) as db:
        return dict(db.execute("SELECT command_id, status FROM commands").fetchall())


# How long each in-flight command runs: the queued commands and the load are set up while they
# run, and SIGTERM must come before they end (at 500 ms, a loaded machine saw one end first and
# the command queued behind it start). The grace period is raised to match, so they finish in it.
INFLIGHT_MS = 4000


def test_sigterm_under_load(home):
    proc = run_daemon(home, env={"LLMGINE_SHUTDOWN_TIMEOUT": "60"})
    state: dict[str, Any] = {}

    async def scenario() -> None:
        await wait_ready(home, proc)
        async with unix_session(home) as http:
            sids, queued = [], []
            for _ in range(3):
                _, session = await post(http, "/api/sessions", {})
                sid = session["session_id"]
                await post(
                    http,
                    "/api/engines",
                    {"engine_type": "DummyEngine", "session_id": sid, "configuration": {"delay_ms": 500}},
                )
                sids.append(sid)
            # A tool: the sandbox pool starts its workers when user code will run, and a
            # call waits for them; the shutdown must reap them.
            tool = {"name": "f", "function_code": "def f():\n    return 1\n"}
            status, _ = await post(http, f"/api/sessions/{sids[0]}/tools", tool)
            assert status == 201
            status, out = await post(http, f"/api/sessions/{sids[0]}/tools/f/execute", {})
            assert status == 200 and out["result"] == 1, out

            # One waiting request per session: its command executes while the daemon is told to stop.
            body = {**DUMMY, "parameters": {"prompt": "inflight", "delay_ms": INFLIGHT_MS}}
            inflight = [asyncio.create_task(post(http, f"/api/sessions/{sid}/commands?wait=120", body)) for sid in sids]
            await eventually(
                lambda: list(stored_statuses(home).values()).count("executing") == len(sids),
                timeout=60,
                interval=0.05,
                message="the in-flight commands executing",
            )
            for sid in sids:
                for i in range(2):
                    status, rec = await post(
                        http, f"/api/sessions/{sid}/commands", {**DUMMY, "parameters": {"prompt": f"queued {i}"}}
                    )
                    assert status == 202 and rec["status"] == "queued"
                    queued.append(rec["command_id"])

            acked: set[str] = set()
            stop = False

            async def publisher() -> None:
                while not stop:
                    try:
                        status, body = await post(
                            http, f"/api/sessions/{sids[0]}/events", {"event_type": "Load", "data": {}}
                        )
                    except (TimeoutError, aiohttp.ClientError):
                        return
                    if status == 201:
                        acked.add(body["event_id"])

            publishers = [asyncio.create_task(publisher()) for _ in range(4)]
            await eventually(lambda: acked, timeout=60, message="an event published by the load")
            state["children"] = descendants(proc.pid)
            # What the assertions below rely on, still true when the signal goes.
            statuses = stored_statuses(home)
            assert {statuses[c] for c in queued} == {"queued"}, statuses
            proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*inflight)
            stop = True
            await asyncio.gather(*publishers)
            state.update(answers=answers, queued=queued, acked=acked)

    run_then_exit_0(proc, scenario)

    # In-flight requests were answered: their commands finished during the grace period.
    assert [(status, rec["status"]) for status, rec in state["answers"]] == [(200, "completed")] * 3
    statuses = stored_statuses(home)
    assert {statuses[c] for c in state["queued"]} == {"queued"}
    assert "executing" not in statuses.values()
    assert state["children"], "the sandbox pool had no workers to reap"
    assert not [pid for pid in state["children"] if alive(pid)]
    assert not (home / "run" / "llmgined.sock").exists()
    assert not (home / "run" / "llmgined.pid").exists()
    integrity_ok(home)
    with open_home_db(home) as db:
        stored = {r[0] for r in db.execute("SELECT event_id FROM events WHERE event_type = 'Load'")}
    assert state["acked"] <= stored

    # The next start runs what stayed queued.
    proc = run_daemon(home)
    try:

        async def resumed() -> None:
            await wait_ready(home, proc)
            await eventually(
                lambda: {stored_statuses(home)[c] for c in state["queued"]} == {"completed"},
                timeout=60,
                interval=0.05,
                message="the queued commands run after the restart",
            )

        asyncio.run(resumed())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def closed_loop(
    connect: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    request: Callable[[str, bytes], bytes],
    sid: str,
    seen: dict[str, list[str]],
) -> None:
    """Publish events back to back on one keep-alive connection (a raw HTTP/1.1 client: what
    the server sends is what it reads; ``request(sid, body)`` makes each request's bytes) until
    an answer says ``Connection: close``, or the connection ends with a request unanswered."""
    reader, writer = await connect()
    try:
        for n in range(100_000):
            mark = f"{sid}-{n}"
            writer.write(request(sid, json.dumps({"event_type": "Load", "data": {"mark": mark}}).encode()))
            try:
                answer = await reader.readuntil(b"\r\n\r\n")
                length = int(answer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                seen["unanswered"].append(mark)
                return
            assert answer.startswith(b"HTTP/1.1 201"), answer
            seen["acknowledged"].append(mark)
            if b"\r\nconnection: close\r\n" in answer.lower():
                seen["told to close"].append(mark)
                return
    finally:
        writer.close()


def _plain_publish(sid: str, body: bytes) -> bytes:
    head = f"POST /api/sessions/{sid}/events HTTP/1.1\r\nHost: llmgine\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_requests_sent_as_the_stop_begins_are_answered_and_told_to_close(home):
    # aiohttp's stop closed every connection at once: a client of a closed loop had sent its
    # next request on reading its last answer, and that request got no answer at all (neither
    # done nor refused: 32 of 32 connections lost one at every stop), and no answer before had
    # said the connection would close. Now the listeners close first, every answer says
    # `Connection: close`, and what was sent on the open connections is answered.
    proc = run_daemon(home)
    seen: dict[str, list[str]] = {"acknowledged": [], "unanswered": [], "told to close": []}

    async def scenario() -> None:
        await wait_ready(home, proc)
        async with unix_session(home) as http:
            sids = [(await post(http, "/api/sessions", {}))[1]["session_id"] for _ in range(16)]
        sock = str(home / "run" / "llmgined.sock")
        clients = [
            asyncio.create_task(closed_loop(lambda: asyncio.open_unix_connection(sock), _plain_publish, sid, seen))
            for sid in sids
        ]
        await eventually(lambda: len(seen["acknowledged"]) >= 200, timeout=60, message="the load under way")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 60)

    run_then_exit_0(proc, scenario)
    assert seen["unanswered"] == [] and len(seen["told to close"]) == 16, {k: len(v) for k, v in seen.items()}
    with open_home_db(home) as db:
        stored = {json.loads(row[0])["mark"] for row in db.execute("SELECT data FROM events WHERE event_type = 'Load'")}
    assert set(seen["acknowledged"]) <= stored
