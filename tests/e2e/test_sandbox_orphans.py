"""A daemon killed (kill -9) while a sandboxed call runs leaves no process of its sandbox
behind. The worker, which dropped its uid (and with it bubblewrap's parent-death signal), saw
its pipes to the daemon close and kept polling them: they stay ready once closed, so it spun at
100% CPU, the call's processes alive under it, until the call ended by itself (a tool that
sleeps, or loops, for ever: never). Now it stops the call and ends, and with it, as the
namespace's init, every process of the sandbox."""

from __future__ import annotations

import os
import shutil
import signal
import threading

import pytest
from llmgine_daemon.settings import get_paths

from tests.clitools import short_home, start_daemon, stop_process
from tests.e2e.sandbox_harness import Api
from tests.e2e.test_shutdown import alive, descendants
from tests.eventually import eventually

pytestmark = pytest.mark.e2e

SLEEPER = "def slow(seconds: int) -> str:\n    import time\n    time.sleep(seconds)\n    return 'done'\n"


def living(pids: set[int]) -> set[int]:
    return {pid for pid in pids if alive(pid)}


async def test_a_killed_daemon_leaves_no_sandbox_process_running():
    home = short_home()
    daemon = start_daemon(home, env={"API_WORKERS": "1"})
    sandbox: set[int] = set()
    try:
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        sid = api.session()
        status, body = api.call(
            "POST", f"/api/sessions/{sid}/tools", {"name": "slow", "function_code": SLEEPER, "timeout": 300}
        )
        assert status == 201, body

        def call() -> None:
            try:
                api.call("POST", f"/api/sessions/{sid}/tools/slow/execute", {"arguments": {"seconds": 290}}, 320)
            except OSError:  # the daemon is killed under it
                pass

        def workers_ready() -> bool:
            _, state = api.call("GET", "/api/status")
            return state["sandbox"]["state"] != "starting"

        await eventually(workers_ready, timeout=60)
        idle = len(descendants(daemon.proc.pid))  # bubblewrap, a worker and its forker each
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        # The call's own process, forked by a forker: the call runs.
        await eventually(lambda: len(descendants(daemon.proc.pid)) > idle, timeout=60, message="no call started")
        sandbox = descendants(daemon.proc.pid)
        assert sandbox, "no process under the daemon"
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        await eventually(lambda: not living(sandbox), timeout=20, message="every sandbox process gone")
        caller.join(5)
    finally:
        for pid in living(sandbox):  # whatever the test found left: never left running
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        stop_process(daemon.proc)
        shutil.rmtree(home, ignore_errors=True)
