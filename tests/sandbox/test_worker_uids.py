"""A root daemon runs each worker as a uid of its own (``sandbox.uids``).

The kernel keeps some counters per uid, across every namespace: POSIX message queue bytes
(RLIMIT_MSGQUEUE), queued signals, epoll watches, pipe buffer pages, RLIMIT_NPROC. With every
worker as ``nobody``, one session's call could use up such a count and make another session's
calls, running on other workers at the same time, fail. Real workers, two of them: one call
holds the message-queue quota of its uid, another session's call on the other worker must
still get a queue of its own.
"""

from __future__ import annotations

import os

import pytest

from tests.sandbox.holding import HOLD_UNTIL_ENDED, while_held

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="a daemon not run as root runs its workers as its own user (docs/sandbox.md)"
)

# POSIX message queues through the C library: 10 messages of 8 KiB each charge ~82 KB of the
# uid's 800 KB quota; nine of them leave no room for a tenth.
MQ = """
import ctypes, os

class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]

libc = ctypes.CDLL(None, use_errno=True)
libc.mq_open.restype = ctypes.c_int
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Attr)]

def queues(prefix, most):
    attr = Attr(0, 10, 8192, 0)
    made = 0
    for i in range(most):
        if libc.mq_open(f"/{prefix}{i}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr)) < 0:
            return made, os.strerror(ctypes.get_errno())
        made += 1
    return made, ""
"""
HOLD = (
    MQ
    + """
import time

async def hold():
    made, refused = queues("hold", 1000)
"""
    + HOLD_UNTIL_ENDED
    + """
    return {"made": made, "refused": refused, "uid": os.getuid()}
"""
)
ONE = (
    MQ
    + """
def one():
    made, refused = queues("one", 1)
    return {"made": made, "refused": refused, "uid": os.getuid()}
"""
)


async def test_one_sessions_per_uid_counts_do_not_reach_another_sessions_calls(make_client):
    client = await make_client(API_WORKERS="2")

    async def other_runs(b: str) -> dict:
        resp = await client.post(f"/api/sessions/{b}/tools/one/execute", json={"arguments": {}})
        return await resp.json()

    held_out, other = await while_held(client, ("hold", HOLD), ("one", ONE), other_runs)
    # The attack did what it meant to: its uid's quota is used up...
    assert held_out["result"]["refused"] and held_out["result"]["made"] >= 1, held_out
    # ...and the other session's call, on the other worker, is not touched by it.
    assert other["error"] is None and other["result"]["made"] == 1, other
    assert other["result"]["uid"] != held_out["result"]["uid"], (other, held_out)
    status = await (await client.get("/api/status")).json()
    sandbox = status["sandbox"]
    # Each worker has a uid of its own from sandbox.uids (a worker whose call left queues
    # behind, or was killed, is replaced: by a worker with another free uid).
    first, last = 1879048192, 1879052287  # the default range
    assert sandbox["crashes"] == 0 and sandbox["uid"] is None, sandbox
    # (A replaced worker is listed until it is reaped.)
    assert sandbox["uids"] and all(first <= uid <= last for uid in sandbox["uids"]), sandbox


def test_without_a_pids_cgroup_a_workers_process_budget_counts_only_its_own_uid() -> None:
    # A root daemon on a read-only /sys/fs/cgroup caps a call's processes with RLIMIT_NPROC,
    # which counts every task of the worker's uid: the limit is what that uid runs now plus
    # the budget. With a uid of its own that is the budget alone (root's own tasks are not
    # the worker's: counting them gave a limit of thousands).
    from llmgine_daemon.sandbox.calls import SandboxLimits
    from llmgine_daemon.sandbox.isolation import Isolation
    from llmgine_daemon.sandbox.procs import count_tasks
    from llmgine_daemon.sandbox.worker_process import OVERHEAD_PROCESSES, nproc_limit, worker_uid

    iso = Isolation("bubblewrap", uid=65534, gid=65534)
    uid = worker_uid(iso, (1879048192, 1879052287), set())
    assert uid is not None and 1879048192 <= uid and count_tasks(uid) == 0
    limits = SandboxLimits(processes=16)
    assert nproc_limit(iso, limits, False, uid) == 16 + OVERHEAD_PROCESSES
    assert nproc_limit(iso, limits, True, uid) == 0  # a pids cgroup caps them instead
