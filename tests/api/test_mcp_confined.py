"""A session token's stdio MCP server (``mcp.session_token_stdio``) runs with a sandbox
worker's limits and, for a daemon run as root, as a uid of ``sandbox.uids`` of its own: it
ran as the daemon's user (root) with no limit at all, so one token could take the machine's
memory or processes for as long as its session lived. And a command under /bin (a link to /usr/bin) starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
from typing import Any

import pytest

from tests.api.test_mcp_servers import add_server
from tests.conftest import create_session
from tests.eventually import eventually

PYTHON = "/usr/bin/python3"

# The JSON-RPC loop of the stdio MCP servers below (the system interpreter has no SDK): it
# serves the functions of the script's TOOLS, each answering a JSON-able value.
STDIO_LOOP = r"""
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "-".join(TOOLS), "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": n, "description": n, "inputSchema": {"type": "object"}} for n in TOOLS]}
    elif method == "tools/call":
        out = TOOLS[msg["params"]["name"]]()
        result = {"content": [{"type": "text", "text": json.dumps(out)}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


# A minimal stdio MCP server (the system interpreter has no SDK): one tool, `ident`, that
# answers what the process is and may do.
SERVER = (
    r"""
import json, os, resource, sys
def ident():
    names = ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_NICE")
    limits = {n: resource.getrlimit(getattr(resource, n))[0] for n in names}
    return {"uid": os.getuid(), "gid": os.getgid(), "limits": limits,
            "policy": os.sched_getscheduler(0), "nice": os.getpriority(os.PRIO_PROCESS, 0)}
TOOLS = {"ident": ident}
"""
    + STDIO_LOOP
)


async def _ident(client: Any, sid: str, token: dict[str, str], name: str) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/tools/{name}.ident/execute", json={"arguments": {}}, headers=token)
    out = await resp.json()
    assert resp.status == 200 and out["error"] is None, out
    return json.loads(out["result"])  # (a text result is the tool's text)


async def test_a_session_tokens_stdio_server_has_a_workers_limits_and_user(make_client: Any) -> None:
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    server = await add_server(client, sid, headers=token, name="me", command=PYTHON, args=["-c", SERVER])
    assert server["status"] == "running", server
    me = await _ident(client, sid, token, "me")
    assert me["limits"]["RLIMIT_AS"] == 1024 * 2**20  # sandbox.memory_mb
    assert me["limits"]["RLIMIT_FSIZE"] == 64 * 2**20  # sandbox.file_size_mb
    assert 0 < me["limits"]["RLIMIT_NPROC"] < 100_000
    if os.geteuid() == 0:  # a root daemon: a uid of sandbox.uids and sandbox.user's group, as its workers
        assert 1879048192 <= me["uid"] <= 1879052287 and me["gid"] == pwd.getpwnam("nobody").pw_gid

    # A command under /bin (a link to /usr/bin on merged-/usr systems) starts too.
    if shutil.which("sh", path="/bin"):
        shell = await add_server(
            client, sid, headers=token, name="sh", command="/bin/sh", args=["-c", f'exec {PYTHON} -c "$0"', SERVER]
        )
        assert shell["status"] == "running", shell
        assert (await _ident(client, sid, token, "sh"))["limits"]["RLIMIT_AS"] == 1024 * 2**20


async def test_a_session_tokens_stdio_server_has_a_cpu_budget_and_the_lowest_priority(make_client: Any) -> None:
    """Such a server had no CPU cap: it lives as long as its session, and spinning it took a
    core from the daemon and every other session (no cgroup cpu.max here). It runs with
    RLIMIT_CPU (mcp.session_token_cpu_seconds; past it, killed and restarted) at SCHED_IDLE
    and nice 19, and cannot raise them again (RLIMIT_NICE 0)."""
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true", LLMGINE_MCP_SESSION_TOKEN_CPU_SECONDS="120")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    server = await add_server(client, sid, headers=token, name="me", command=PYTHON, args=["-c", SERVER])
    assert server["status"] == "running", server
    me = await _ident(client, sid, token, "me")
    assert me["limits"]["RLIMIT_CPU"] == 120 and me["limits"]["RLIMIT_NICE"] == 0
    assert me["policy"] == os.SCHED_IDLE and me["nice"] == 19


def _running(marker: str) -> list[int]:
    """Host processes whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


async def test_a_removed_session_token_server_leaves_no_process(make_client: Any) -> None:
    """Under a root daemon a session token's server drops to sandbox.user, and changing its
    uid cleared the parent-death signal bubblewrap had set; bubblewrap puts it in a session of
    its own, so stopping it (killing bubblewrap's process group) left it and everything it
    started running as `nobody`, reparented to init: after `mcp remove`, after its session
    ended, after the daemon stopped (1.6 GB held by one removed server's children, seen)."""
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    marker = f"marker-{os.getpid()}-{id(client)}"
    # The server forks a child, serves as usual, and ignores the end of its input.
    fork = "import os, time\nif os.fork() == 0:\n    time.sleep(3600)\n    os._exit(0)\n"
    code = f"# {marker}\n{fork}{SERVER}\ntime.sleep(3600)\n"
    server = await add_server(client, sid, headers=token, name="stay", command=PYTHON, args=["-c", code])
    assert server["status"] == "running", server
    try:
        assert len(_running(marker)) >= 2  # the server and its child
        resp = await client.delete(f"/api/sessions/{sid}/mcp-servers/stay", headers=token)
        assert resp.status == 204, await resp.text()
        await eventually(lambda: not _running(marker), message="the removed server's processes are still running")
    finally:
        for pid in _running(marker):  # what a failure left
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


async def test_a_server_removed_before_it_answered_leaves_no_process(make_client: Any) -> None:
    """Removed while it had not answered ``initialize`` yet, a server's process could be left
    running (its bubblewrap a child of the daemon until the daemon ended): the stop's grace
    (5 s) ended in the second the failed start gives a server to exit before it kills it, and
    the cancel landed there, before the kill. Registering and removing such servers, a
    session token kept as many processes as it liked past the 20 a session may have."""
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    marker = f"silent-{os.getpid()}-{id(client)}"
    code = f"# {marker}\nimport time\ntime.sleep(3600)\n"  # never answers, never reads

    async def add_and_remove(n: int) -> None:
        # Answered after mcp.start_timeout (15 s) while `initialize` waits (20 s); removed at
        # staggered moments so that some stops' grace ends in that second.
        name = f"silent{n}"
        server = await add_server(client, sid, headers=token, name=name, command=PYTHON, args=["-c", code])
        assert server["status"] != "running", server
        await asyncio.sleep(n * 0.2)
        resp = await client.delete(f"/api/sessions/{sid}/mcp-servers/{name}", headers=token)
        assert resp.status == 204, await resp.text()

    try:
        await asyncio.gather(*(add_and_remove(n) for n in range(6)))
        await eventually(lambda: not _running(marker), message="removed servers' processes are still running")
    finally:
        for pid in _running(marker):  # what a failure left
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# Two tools: `hog` makes POSIX message queues until the kernel refuses one (it counts their
# bytes per uid, in every namespace: RLIMIT_MSGQUEUE, 800 KiB by default, about nine queues)
# and keeps them; `probe` says which uid it runs as and whether it can still make one.
HOG = (
    r"""
import ctypes, ctypes.util, json, os, sys
rt = ctypes.CDLL(ctypes.util.find_library("rt") or None, use_errno=True)
held = []
def queue(name):
    fd = rt.mq_open(name.encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    return fd, (ctypes.get_errno() if fd < 0 else 0)
def hog():
    errno = 0
    while len(held) < 1000 and not errno:
        fd, errno = queue(f"/hog{len(held)}")
        if fd >= 0:
            held.append(fd)
    return {"held": len(held), "errno": errno}
def probe():
    fd, errno = queue("/probe")
    if fd >= 0:
        os.close(fd)
        rt.mq_unlink(b"/probe")
    return {"uid": os.getuid(), "errno": errno}
TOOLS = {"hog": hog, "probe": probe}
"""
    + STDIO_LOOP
)


@pytest.mark.skipif(os.geteuid() != 0, reason="a daemon not run as root gives its servers no uids of their own")
async def test_session_token_servers_of_a_root_daemon_run_as_uids_of_their_own(make_client: Any) -> None:
    """Every session token's stdio server of a root daemon ran as sandbox.user: the kernel's
    per-uid counts (message queue bytes, queued signals, epoll watches,
    pipe pages, RLIMIT_NPROC) were all of them together, so one session's server could use
    one up and every other session's servers were refused it (here: a message queue, refused
    with EMFILE to another session's server). Each run now has a uid of sandbox.uids, as the
    workers do, given back when it ends."""
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    sessions = [await create_session(client) for _ in range(2)]
    client.session.headers.pop("Authorization")
    servers = []
    for name, session in zip(("a", "b"), sessions, strict=True):
        sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
        server = await add_server(client, sid, headers=token, name=name, command=PYTHON, args=["-c", HOG])
        assert server["status"] == "running", server
        servers.append((sid, token, name))

    async def call(server: tuple[str, dict[str, str], str], tool: str) -> dict[str, Any]:
        sid, token, name = server
        resp = await client.post(
            f"/api/sessions/{sid}/tools/{name}.{tool}/execute", json={"arguments": {}}, headers=token
        )
        out = await resp.json()
        assert resp.status == 200 and out["error"] is None, out
        return json.loads(out["result"])

    first, second = await call(servers[0], "probe"), await call(servers[1], "probe")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert first["uid"] != second["uid"] and nobody not in (first["uid"], second["uid"])
    assert first["uid"] not in {w.pw_uid for w in pwd.getpwall()}
    hogged = await call(servers[0], "hog")
    assert hogged["held"] > 0 and hogged["errno"] != 0  # refused (EMFILE): its uid's bytes are used up
    assert (await call(servers[1], "probe"))["errno"] == 0  # the other session's server is unharmed


async def test_a_session_token_learns_nothing_of_files_outside_usr_and_bin(make_client: Any) -> None:
    """A command outside /usr and /bin was looked for first: a missing one answered 422 "not
    found", an executable one 403, so a session token could tell which programs exist anywhere
    on the host (in another user's home too). Refused by its path now, before any lookup."""
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    session = await create_session(client)
    sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization")
    answers = []
    for command in (PYTHON.replace("/usr/bin", "/opt/nowhere"), __file__, "/usr/../etc/passwd", "./x/y"):
        error = await add_server(client, sid, expect=403, headers=token, name="probe", command=command)
        answers.append(error["error"]["message"])
    assert len(set(answers)) == 1, answers
