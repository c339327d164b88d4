"""The real llmgined: another user on the socket, file modes, a config file others can write,
non-loopback binds, and no secret in the daemon's own log."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests import clitools
from tests.e2e.test_llmgined import fails_with, free_port, run_daemon, wait_for_http
from tests.eventually import eventually, eventually_blocking

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-marker-e2e-value"


def request(port: int, path: str, key: str | None, method: str = "GET", body: bytes | None = None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp) if resp.status != 204 else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_file_modes_and_no_secret_in_the_log(home):
    port = free_port()
    log = home / "state" / "llmgined.log"
    proc = run_daemon(
        home, "--port", str(port), "--log-level", "debug", "--log-file", str(log), env={"API_KEY_SECRET": SECRET}
    )
    try:
        wait_for_http(port, proc)
        local = (home / "config" / "local.key").read_text().strip()
        status, created = request(port, "/api/auth/keys", local, "POST", b'{"name": "e2e"}')
        assert status == 201
        status, session = request(port, "/api/sessions", created["key"], "POST", b"{}")
        assert status == 201
        for bad in (SECRET + "x", created["key"] + "x", session["session_token"] + "x"):
            assert request(port, "/api/status", bad)[0] == 401
        assert request(port, "/api/status", SECRET)[0] == 200
        assert request(port, f"/api/auth/keys/{created['key_id']}", local, "DELETE")[0] == 200
        for path in ("config", "data", "run", "state"):
            assert stat.S_IMODE((home / path).stat().st_mode) == 0o700, path
        files = ["config/local.key", "run/llmgined.pid", "run/llmgined.sock", "state/llmgined.log"]
        if not clitools.BACKEND_ENV:  # on PostgreSQL the data lives in the server
            files.append("data/llmgine.db")
        for path in files:
            assert stat.S_IMODE((home / path).stat().st_mode) == 0o600, path
    finally:
        stop(proc)
    text = log.read_text() + (proc.stderr.read() if proc.stderr else "")
    assert "created user API key" in text  # the log is really being written
    for secret in (SECRET, local, created["key"], session["session_token"]):
        assert secret not in text
        assert secret.split("_", 2)[-1] not in text
    if clitools.BACKEND_ENV:  # the database's password, from DATABASE_URL
        password = urlsplit(clitools.BACKEND_ENV["DATABASE_URL"]).password
        assert password and password not in text


def test_config_file_writable_by_others_is_refused(home):
    (home / "config").mkdir(mode=0o700)
    config = home / "config" / "config.toml"
    config.write_text("[logging]\nlevel = 'info'\n")
    os.chmod(config, 0o666)
    line = fails_with(home)
    assert "writable by others" in line and "chmod 600" in line
    os.chmod(config, 0o620)
    assert "writable by others" in fails_with(home)


def test_env_file_writable_by_others_is_refused(home):
    # `--env-file` sets what the config file does (here: who may connect, and from where):
    # one that others could write was read as trusted.
    env_file = home / "dev.env"
    env_file.write_text("API_KEY_SECRET=someone-elses-key\nHOST=0.0.0.0\n")
    os.chmod(env_file, 0o666)
    line = fails_with(home, "--env-file", str(env_file))
    assert "env file is writable by others" in line and "chmod 600" in line, line
    os.chmod(env_file, 0o620)
    assert "writable by others" in fails_with(home, "--env-file", str(env_file), "--reload")


def test_wildcard_cors_origin_refused_at_start(home):
    line = fails_with(home, env={"CORS_ORIGINS": "*"})
    assert "security.cors_origins" in line
    # An entry that is no origin was ignored, and its page refused 403 without a word why.
    line = fails_with(home, env={"CORS_ORIGINS": "http://127.0.0.1:5173,localhost:3000"})
    assert "security.cors_origins" in line and "'localhost:3000' is not an origin" in line, line


def test_non_loopback_bind_needs_a_deliberate_credential(home):
    # The local CLI key exists after a first start; it does not count.
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        local = (home / "config" / "local.key").read_text().strip()
    finally:
        stop(proc)
    assert "non-loopback" in fails_with(home, "--host", "0.0.0.0", "--port", str(free_port()))
    # A key from `auth key create` does (minted over the socket-less TCP API here).
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        assert request(port, "/api/auth/keys", local, "POST", b"{}")[0] == 201
    finally:
        stop(proc)
    port = free_port()
    proc = run_daemon(home, "--host", "0.0.0.0", "--port", str(port), "--no-socket")
    try:
        wait_for_http(port, proc)
        # Bound to every address: IP literals are fine, a rebinding name is not.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/health", headers={"Host": "rebind.example"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403
    finally:
        stop(proc)


PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("CONNECT", exc.errno); sys.exit(0)
s.sendall(b"GET /api/status HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
print("FORBIDDEN" if b"FORBIDDEN" in data else "")
"""


def _as_nobody() -> list[str] | None:
    if os.geteuid() != 0:
        return None
    tool = shutil.which("setpriv")
    if tool:
        return [tool, "--reuid=65534", "--regid=65534", "--clear-groups"]
    tool = shutil.which("runuser")
    return [tool, "-u", "nobody", "--"] if tool else None


def test_non_owner_uid_is_refused_on_the_socket(home):
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("needs root and setpriv/runuser to act as another uid")
    proc = run_daemon(home)
    sock = home / "run" / "llmgined.sock"
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            return sock.exists()

        eventually_blocking(started, timeout=60, message="the daemon's socket")
        # As shipped (0600 socket, 0700 directory) another user cannot even connect.
        out = subprocess.run(
            [*prefix, sys.executable, "-c", PROBE, str(sock)], capture_output=True, text=True, timeout=30
        ).stdout
        assert out.startswith("CONNECT"), out
        # With the file permissions opened up, SO_PEERCRED still refuses them: 403.
        os.chmod(home, 0o711)
        os.chmod(home / "run", 0o711)
        os.chmod(sock, 0o666)
        out = subprocess.run(
            [*prefix, sys.executable, "-c", PROBE, str(sock)], capture_output=True, text=True, timeout=30
        ).stdout
        assert "403" in out and "FORBIDDEN" in out, out
    finally:
        os.chmod(home, 0o700)
        stop(proc)


def test_a_session_tokens_held_waits_leave_descriptors_for_everyone(home):
    """A command wait holds its connection up to 300 s, and a session token's rate limit lets
    it open a thousand at once: with the usual soft limit of 1024 open files, the daemon had no
    descriptor left, and accept() failed for everyone, the owner on the Unix socket included.
    llmgined takes the hard limit: here 256 soft, 400 waits."""
    import asyncio
    import resource

    import aiohttp

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > 1024, "the test needs a hard limit above 1024"

    def low_soft_limit() -> None:
        clitools.default_signals()
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    port = free_port()
    env = {**clitools.DAEMON_DEFAULTS, **os.environ, **clitools.BACKEND_ENV, "LLMGINE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_daemon", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_soft_limit,
    )
    try:
        wait_for_http(port, proc)
        local = (home / "config" / "local.key").read_text().strip()
        status, session = request(port, "/api/sessions", local, "POST", b"{}")
        assert status == 201
        sid, token = session["session_id"], session["session_token"]
        engine = json.dumps({"engine_type": "DummyEngine", "session_id": sid}).encode()
        assert request(port, "/api/engines", local, "POST", engine)[0] == 201
        slow = json.dumps({"command_type": "DummyEngineCommand", "parameters": {"prompt": "p", "delay_ms": 600000}})
        status, command = request(port, f"/api/sessions/{sid}/commands?wait=0", local, "POST", slow.encode())
        assert status == 202

        def sockets() -> int:
            count = 0
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                try:  # a descriptor listed may be closed before it is read
                    count += os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:")
                except FileNotFoundError:
                    pass
            return count

        async def hold_and_check() -> int:
            wait = {"command_ids": [command["command_id"]], "timeout": 300}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

                async def one() -> None:
                    url = f"http://127.0.0.1:{port}/api/commands/wait"
                    async with client.post(url, json=wait, headers={"X-Session-Token": token}) as resp:
                        await resp.read()

                waits = [asyncio.create_task(one()) for _ in range(400)]
                try:
                    await eventually(lambda: sockets() >= 400, message="the daemon accepted the waits")
                    unix = aiohttp.UnixConnector(path=str(home / "run" / "llmgined.sock"))
                    async with aiohttp.ClientSession(connector=unix) as owner:
                        async with owner.get("http://l/api/health", timeout=aiohttp.ClientTimeout(30)) as resp:
                            return resp.status
                finally:
                    for task in waits:
                        task.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)

        assert asyncio.run(hold_and_check()) == 200
        assert int(next(line for line in open(f"/proc/{proc.pid}/limits") if "open files" in line).split()[3]) > 256
    finally:
        stop(proc)
