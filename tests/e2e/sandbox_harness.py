"""What the sandbox attack tests share: a client over the daemon's socket, a real llmgined as
root and as a useradd'ed normal user (the ``daemon`` fixture), and the checks between attacks."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.sandbox.isolation import child_pid
from llmgine_daemon.settings import get_paths

from llmgine_cli.client import parse_url
from llmgine_cli.daemonctl import probe
from tests.clitools import cli_env, free_port, full_env, short_home, start_daemon, stop_process


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("llmgine", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Api:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        conn = _UnixConnection(self.socket_path, timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def session(self) -> str:
        status, body = self.call("POST", "/api/sessions", {})
        assert status == 201, body
        return body["session_id"]

    def tool(
        self, sid: str, code: str, arguments: dict[str, Any] | None = None, *, name: str = "f", timeout: float = 20
    ) -> dict[str, Any]:
        status, body = self.call(
            "POST",
            f"/api/sessions/{sid}/tools?replace=true",
            {"name": name, "function_code": textwrap.dedent(code), "timeout": timeout},
        )
        assert status == 201, body
        status, body = self.call("POST", f"/api/sessions/{sid}/tools/{name}/execute", {"arguments": arguments or {}})
        assert status == 200, body
        return body


TEST_USER = "llmgine-sbx-test"


def _unprivileged_user(request: pytest.FixtureRequest) -> tuple[int, int]:
    """A normal user to run the daemon as (created here if need be; removed at the end)."""
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        request.addfinalizer(lambda: subprocess.run(["userdel", TEST_USER], capture_output=True))
        if shutil.which("useradd") is None:
            pytest.skip(
                "cannot create a user on this machine (no useradd): the daemon-as-a-normal-user variant needs one"
            )
        made = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", TEST_USER], capture_output=True, text=True)
        try:  # another run on this machine may have created it meanwhile
            entry = pwd.getpwnam(TEST_USER)
        except KeyError:
            raise AssertionError(f"useradd {TEST_USER}: {made.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def _runs_python(pid: int) -> bool:
    argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    return os.path.basename(argv0).startswith(b"python")


def _as_user_prefix(uid: int, gid: int) -> list[str]:
    """Run as uid/gid, with the interpreter and this checkout in reach: where they sit under a
    directory the user cannot enter (root's home, 0700), that directory is replaced by an empty
    traversable one holding just them (a bwrap mount namespace of the test's own)."""
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parents[2]}
    # A /proc of its own (in a PID namespace of its own) too: the host's may be mode 0700,
    # which leaves a normal user no bubblewrap at all. (unshare mounts it plainly; bwrap's own
    # --proc covers parts of it, and the kernel then refuses /proc to a nested sandbox.)
    args = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--mount-proc",
        "bwrap",
        "--die-with-parent",
        "--dev-bind",
        "/",
        "/",
    ]
    covered: set[Path] = set()
    for path in sorted(needed):
        closed = next((a for a in reversed(path.parents) if a != Path("/") and not os.stat(a).st_mode & 0o001), None)
        if closed is None:
            continue
        if closed not in covered:
            args += ["--perms", "0755", "--tmpfs", str(closed)]
            covered.add(closed)
        top = path.relative_to(closed).parts[0]
        args += ["--ro-bind", str(closed / top), str(closed / top)]
    return [*args, "--", "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


@pytest.fixture(scope="module", params=["root", "user"], ids=["daemon-as-root", "daemon-as-a-normal-user"])
def daemon(request, module_backend_env):
    as_root = os.geteuid() == 0
    if request.param == "root" and not as_root:
        pytest.skip("the tests do not run as root: the daemon-as-root variant needs it")
    home = short_home()
    port = free_port()
    proc = None
    daemon_pid = None
    try:
        env = {"API_WORKERS": "1", "LLMGINE_SANDBOX_MAX_PROCESSES": "16", **module_backend_env()}
        if request.param == "user" and as_root:
            uid, gid = _unprivileged_user(request)
            os.chown(home, uid, gid)
            # Its HOME is a directory it cannot enter (as when started from root's shell with
            # root's HOME): the sandbox must not depend on reading it (its user site-packages
            # could not be looked at, and the sandbox failed to start, no reason given).
            closed = home / "not-its-home"
            closed.mkdir(mode=0o700)
            overrides = cli_env(home, HOME=str(closed), **env)
            argv = [*_as_user_prefix(uid, gid), sys.executable, "-m", "llmgine_daemon", "--port", str(port)]
            with open(home / "daemon-under-test.log", "ab") as log:
                proc = subprocess.Popen(argv, env=full_env(overrides), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            socket_path = get_paths({"LLMGINE_HOME": str(home)}).socket
            deadline = time.monotonic() + 60  # a loaded machine (the suite runs in parallel)
            while probe(parse_url(f"unix://{socket_path}"), timeout=0.5) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((home / "daemon-under-test.log").read_text())
                time.sleep(0.05)
            # unshare and bwrap forward no signal: the daemon itself (their grandchild) is
            # stopped directly.
            # (unshare's own command line names llmgine_daemon too: look for the interpreter.
            # Signalled instead, unshare - which blocks SIGTERM - outlived every wait.)
            daemon_pid = proc.pid
            while not _runs_python(daemon_pid):
                inner = child_pid(daemon_pid)
                assert inner is not None, "the daemon is not under unshare and bwrap"
                daemon_pid = inner
        else:
            proc = start_daemon(home, port=port, env=env).proc
            daemon_pid = proc.pid
        paths = get_paths({"LLMGINE_HOME": str(home)})
        api = Api(str(paths.socket))
        api.home = home  # type: ignore[attr-defined]
        api.port = port  # type: ignore[attr-defined]
        api.pid = daemon_pid  # type: ignore[attr-defined]
        api.database_url = env.get("DATABASE_URL")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while True:  # the workers start in the background
            _, status = api.call("GET", "/api/status")
            if status["sandbox"]["state"] != "starting" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status["sandbox"]["isolation"] == "bubblewrap", status["sandbox"].get("reason")
        api.sandbox = status["sandbox"]  # type: ignore[attr-defined]
        yield api
    finally:
        if daemon_pid is not None:
            try:
                os.kill(daemon_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


def healthy(api: Api) -> None:
    status, body = api.call("GET", "/api/health")
    assert status == 200 and body["status"] == "healthy"
