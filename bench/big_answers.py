"""Peak memory of a real daemon answering with many large command records (docs/bus.md,
"Large pages").

    python bench/big_answers.py [N]     # default 300: about 1.2 GB written to a temp home

A daemon (``python -m llmgine_daemon --port``, SQLite, one sandbox worker) gets N DummyEngine
commands with a 1 MB prompt each (the result echoes it: 2 MB a command) and a batch of N
commands of a user-code handler returning 1 MB each (bubblewrap needed). Then, each on a
daemon started again (so that its peak is the answer's own), one answer is read to its end
and the daemon's peak RSS (``VmHWM`` in /proc/PID/status) printed: a wait for the N ids, the
batch, a wait for the batch, and a second batch of N submitted with ``?wait`` (its run
included). Run it on two checkouts to compare.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIG = "def big(command):\n    return {'x': 'y' * 1_000_000}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGINE_", "API_"))}
        self.env.update(
            LLMGINE_HOME=str(home),
            LLMGINE_RATE_LIMIT_AUTHENTICATED="0",
            LLMGINE_RATE_LIMIT_UNAUTHENTICATED="0",
            API_WORKERS="1",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        from llmgine_daemon.settings import get_paths

        self.paths = get_paths({"LLMGINE_HOME": str(home)})
        self.key = ""

    def start(self) -> int:
        """Start (again); the idle peak RSS in KiB."""
        self.stop()
        cmd = [sys.executable, "-m", "llmgine_daemon", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from llmgine_daemon.settings import read_local_key

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.key = read_local_key(self.paths) or ""
            if self.key:
                try:
                    self.call("GET", "/api/health")
                    return self.peak()
                except OSError:
                    pass
            time.sleep(0.1)
        raise SystemExit("the daemon did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None

    def peak(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1])
        return 0

    def call(self, method: str, path: str, body: Any = None, *, count: bool = False) -> tuple[int, Any]:
        """(status, the JSON answer), or with ``count`` (status, bytes read)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        try:
            if count:
                n = 0
                while chunk := resp.read(1 << 20):
                    n += len(chunk)
                return resp.status, n
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    home = Path(tempfile.mkdtemp(prefix="llmgine-big-answers-"))
    daemon = Daemon(home)
    try:
        daemon.start()
        _, session = daemon.call("POST", "/api/sessions", {})
        sid = session["session_id"]
        daemon.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        prompt = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "x" * 1_000_000}}
        ids = [daemon.call("POST", f"/api/sessions/{sid}/commands?wait=30", prompt)[1]["command_id"] for _ in range(n)]
        status, _ = daemon.call(
            "POST", f"/api/sessions/{sid}/handlers/commands", {"command_type": "Big", "handler_function": BIG}
        )
        assert status == 201, status
        big = {"commands": [{"command_type": "Big", "parameters": {}}] * n}
        status, batch = daemon.call("POST", f"/api/sessions/{sid}/commands/batch?wait=300", big)
        assert status == 200, batch
        runs = [
            (f"POST /api/commands/wait, {n} ids", "POST", "/api/commands/wait", {"command_ids": ids, "timeout": 5}),
            (f"GET a batch of {n}", "GET", f"/api/sessions/{sid}/batches/{batch['batch_id']}", None),
            ("POST /api/commands/wait, that batch", "POST", "/api/commands/wait", {"batch_id": batch["batch_id"]}),
            (f"POST a batch of {n} ?wait=300 (run)", "POST", f"/api/sessions/{sid}/commands/batch?wait=300", big),
        ]
        for name, method, path, body in runs:
            idle = daemon.start()
            status, sent = daemon.call(method, path, body, count=True)
            peak = daemon.peak() / 1024
            print(f"{name}: {status}, {sent / 1e6:,.0f} MB; peak RSS {peak:,.0f} MiB (idle {idle / 1024:,.0f})")
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
