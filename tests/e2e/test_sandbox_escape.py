"""User code attacks the daemon that runs it: a real llmgined (as root here, as CI runs it),
real bubblewrap workers. Every attempt must fail and the daemon keep answering.

Each tool gets what it would need to aim at the daemon (LLMGINE_HOME, the socket path, the TCP
port, the daemon's pid) as arguments: hiding them would prove nothing.
"""

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
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.sandbox.isolation import child_pid
from llmgine_daemon.settings import get_paths

from llmgine_cli.client import parse_url
from llmgine_cli.daemonctl import probe
from tests.clitools import cli_env, free_port, full_env, short_home, start_daemon, stop_process

# One xdist worker runs them all: the daemon-as-a-normal-user variant creates a system user
# (and removes it at the end), which two workers must not do at once.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("unprivileged-user")]


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
def daemon(request):
    as_root = os.geteuid() == 0
    if request.param == "root" and not as_root:
        pytest.skip("the tests do not run as root: the daemon-as-root variant needs it")
    home = short_home()
    port = free_port()
    proc = None
    daemon_pid = None
    try:
        env = {"API_WORKERS": "1", "LLMGINE_SANDBOX_MAX_PROCESSES": "16"}
        if request.param == "user" and as_root:
            uid, gid = _unprivileged_user(request)
            os.chown(home, uid, gid)
            overrides = cli_env(home, **env)
            argv = [*_as_user_prefix(uid, gid), sys.executable, "-m", "llmgine_daemon", "--port", str(port)]
            with open(home / "daemon-under-test.log", "ab") as log:
                proc = subprocess.Popen(argv, env=full_env(overrides), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            socket_path = get_paths({"LLMGINE_HOME": str(home)}).socket
            deadline = time.monotonic() + 20
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


def test_the_daemons_files_socket_and_port_are_out_of_reach(daemon):
    home = Path(daemon.home)
    targets = [str(p) for p in home.rglob("*")] + [str(home)]
    assert any(t.endswith("local.key") for t in targets)
    out = daemon.tool(
        daemon.session(),
        """
        import os, socket

        def f(home, targets, socket_path, port, daemon_pid):
            seen = {}
            for path in targets + ["/etc/shadow", "/etc/passwd", "/proc/1/environ",
                                   "/home", "/run", "/sys/fs/cgroup", "/var", "/work"]:
                try:
                    if os.path.isdir(path):
                        seen[path] = os.listdir(path)
                    else:
                        with open(path, "rb") as fh:
                            seen[path] = fh.read(100).hex()
                except OSError as exc:
                    pass
            attempts = {}
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(socket_path)
                attempts["unix"] = "connected"
            except OSError as exc:
                attempts["unix"] = type(exc).__name__
            for host in ("127.0.0.1", "::1"):
                try:
                    socket.create_connection((host, port), timeout=1)
                    attempts[host] = "connected"
                except OSError as exc:
                    attempts[host] = type(exc).__name__
            try:
                os.kill(daemon_pid, 0)
                attempts["signal"] = "delivered"
            except OSError as exc:
                attempts["signal"] = type(exc).__name__
            return {"seen": seen, "attempts": attempts, "uid": os.getuid(), "gid": os.getgid(),
                    "root": sorted(os.listdir("/"))}
    """,
        {
            "home": str(home),
            "targets": targets,
            "socket_path": str(daemon.socket_path),
            "port": daemon.port,
            "daemon_pid": daemon.pid,
        },
    )
    assert out["error"] is None, out["error"]
    result = out["result"]
    assert result["seen"] == {}, result["seen"]
    assert set(result["attempts"].values()) <= {
        "FileNotFoundError",
        "ConnectionRefusedError",
        "OSError",
        "PermissionError",
        "ProcessLookupError",
        "TimeoutError",
    }, result["attempts"]
    assert "connected" not in result["attempts"].values()
    assert result["attempts"]["signal"] == "ProcessLookupError"
    assert result["uid"] != 0 and result["gid"] != 0
    assert "etc" not in result["root"] and "home" not in result["root"] and "sys" not in result["root"]
    healthy(daemon)


def test_no_privilege_can_be_regained(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import ctypes, os

        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            status = {}
            for line in open("/proc/self/status"):
                key, _, value = line.partition(":")
                if key in ("CapEff", "CapPrm", "NoNewPrivs"):
                    status[key] = value.strip()
            return {
                "setuid": libc.setuid(0),
                "setgid": libc.setgid(0),
                "uid": os.getuid(),
                "ptrace_pid1": libc.ptrace(16, 1, 0, 0),  # PTRACE_ATTACH the zygote
                "umount_proc": libc.umount2(b"/proc", 2),
                "status": status,
            }
    """,
    )
    result = out["result"]
    assert result["setuid"] == -1 and result["setgid"] == -1 and result["uid"] != 0, result
    assert result["ptrace_pid1"] == -1 and result["umount_proc"] == -1
    assert result["status"] == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1"}, result
    healthy(daemon)


def test_a_write_to_the_hosts_tmp_does_not_reach_the_host(daemon):
    name = f"llmgine-escape-{uuid.uuid4().hex}"
    out = daemon.tool(
        daemon.session(),
        """
        import os

        def f(name):
            with open("/tmp/" + name, "w") as fh:
                fh.write("x")
            with open("/tmp/" + name) as fh:  # its own /tmp works within the call
                return fh.read()
    """,
        {"name": name},
    )
    assert out["result"] == "x", out
    assert not os.path.exists(f"/tmp/{name}")
    second = daemon.tool(
        daemon.session(),
        """
        import os

        def f(name):
            return os.path.exists("/tmp/" + name)
    """,
        {"name": name},
    )
    assert second["result"] is False  # and the next call does not find it either


def test_cgroup_files_are_absent(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import os

        def f():
            done = []
            for path in ("/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/cgroup.procs",
                         "/sys/fs/cgroup/memory/cgroup.procs"):
                try:
                    with open(path, "w") as fh:
                        fh.write("0")
                    done.append(path)
                except OSError:
                    pass
            return done
    """,
    )
    assert out["result"] == [], out


def test_forged_frames_and_a_lingering_process_reach_no_other_call(daemon):
    attacker = daemon.session()
    victim = daemon.session()
    out = daemon.tool(
        attacker,
        """
        import os, struct, time

        def attack():
            # Frames as the pool would read them: a Done and an Exited for any call, msgpack
            # hand-made (fixmap {"type": "Done", ...}) to every descriptor this process holds.
            def frame(payload):
                return struct.pack(">I", len(payload)) + payload

            forged = [
                frame(b"\\x83\\xa4type\\xa4Done\\xa7call_id\\xa1x\\xa2ok\\xc3"),
                frame(b"\\x84\\xa4type\\xa6Exited\\xa7call_id\\xa1x\\xa6status\\xa1x\\xa5clean\\xc3"),
            ]
            wrote = []
            for fd in range(3, 256):
                for data in forged:
                    try:
                        os.write(fd, data)
                        wrote.append(fd)
                    except OSError:
                        pass
            if os.fork() == 0:  # stay alive, reading whatever comes
                os.setsid()
                for fd in range(3, 256):
                    try:
                        os.set_blocking(fd, True)
                    except OSError:
                        pass
                while True:
                    for fd in range(0, 256):
                        try:
                            os.read(fd, 65536)
                        except OSError:
                            pass
                    time.sleep(0.01)
            return sorted(set(wrote))
    """,
        name="attack",
    )
    # The forged frames broke the protocol of the attacker's own call, nothing else.
    assert out["result"] is None and out["error"]["code"] == "WORKER_CRASHED", out
    assert "protocol" in out["error"]["message"]
    secret = uuid.uuid4().hex
    result = daemon.tool(
        victim,
        """
        def login(password):
            return {"echo": password}
    """,
        {"password": secret},
        name="login",
    )
    assert result["error"] is None and result["result"] == {"echo": secret}, result
    status, events = daemon.call("GET", f"/api/sessions/{victim}/events?limit=100")
    assert status == 200
    assert [e["event_type"] for e in events["events"]].count("ToolExecuted") == 1
    status, events = daemon.call("GET", f"/api/sessions/{attacker}/events?limit=100")
    assert secret not in json.dumps(events)
    healthy(daemon)


def test_umount_or_leftovers_of_one_call_do_not_reach_the_next(daemon):
    first = daemon.tool(
        daemon.session(),
        """
        import ctypes, os

        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.umount2(b"/proc", 2)
            os.mkdir("/tmp/trap")
            with open("/tmp/trap/x", "w") as fh:
                fh.write("x")
            os.chmod("/tmp/trap", 0)
            return True
    """,
    )
    assert first["result"] is True, first
    second = daemon.tool(
        daemon.session(),
        """
        import os

        def f():
            return {"proc": os.path.exists("/proc/self/status"), "tmp": os.listdir("/tmp")}
    """,
    )
    assert second["result"] == {"proc": True, "tmp": []}, second


def test_three_children_over_the_memory_limit_are_stopped(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import os, time

        def f():
            for _ in range(3):
                if os.fork() == 0:
                    block = bytearray(600 * 2**20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    time.sleep(30)
                    os._exit(0)
            time.sleep(30)
            return "all three held 1.8 GB"
    """,
        timeout=60,
    )
    assert out["result"] is None, out
    assert out["error"]["details"].get("type") == "MemoryError", out["error"]
    healthy(daemon)


def test_a_handler_acts_only_in_its_own_session(daemon):
    own = daemon.session()
    other = daemon.session()
    status, body = daemon.call(
        "POST",
        f"/api/sessions/{own}/handlers/commands",
        {
            "command_type": "Probe",
            "handler_function": textwrap.dedent("""
            async def probe(command):
                other = command.parameters["other"]
                tried = {}
                try:
                    await bus.execute("Noop", {}, session_id=other)
                    tried["kwarg"] = "ran"
                except TypeError:
                    tried["kwarg"] = "refused"
                event = await bus.publish("Probed", {}, metadata={"session_id": other})
                tried["published_in"] = event["session_id"]
                return tried
        """),
        },
    )
    assert status == 201, body
    status, body = daemon.call(
        "POST", f"/api/sessions/{own}/commands?wait=20", {"command_type": "Probe", "parameters": {"other": other}}
    )
    assert status in (200, 201), body
    assert body["status"] == "completed", body
    assert body["result"] == {"kwarg": "refused", "published_in": own}
    status, events = daemon.call("GET", f"/api/sessions/{other}/events?limit=100")
    assert "Probed" not in [e["event_type"] for e in events["events"]]


@pytest.mark.parametrize("how", ["calls", "registrations"])
def test_one_sessions_spinning_calls_leave_room_for_another(tmp_path, how):
    """Session A fills its share of a two-worker pool with spinning calls and queues more;
    session B's call still runs at once (it finishes while A's are still spinning)."""
    home = short_home()
    proc = None
    try:
        d = start_daemon(home, env={"API_WORKERS": "2", "LLMGINE_SHUTDOWN_TIMEOUT": "1"})
        proc = d.proc
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        a, b = api.session(), api.session()
        spin = "def spin():\n    while True:\n        pass\n"
        status, _ = api.call("POST", f"/api/sessions/{a}/tools", {"name": "spin", "function_code": spin, "timeout": 30})
        assert status == 201
        finished: list[float] = []
        # A registration runs the module's top level too (to find the function): a session
        # could spin there instead, and it takes the same share.
        slow_module = (
            "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 8:\n    pass\ndef g():\n    pass\n"
        )

        def spin_call() -> None:
            try:
                if how == "calls":
                    api.call("POST", f"/api/sessions/{a}/tools/spin/execute", {"arguments": {}})
                else:
                    api.call(
                        "POST", f"/api/sessions/{a}/tools?replace=true", {"name": "g", "function_code": slow_module}
                    )
            except OSError:  # the daemon stopped at the end of the test
                return
            finished.append(time.monotonic())

        threads = [threading.Thread(target=spin_call, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # A's first call holds a worker
            _, status_body = api.call("GET", "/api/status")
            if status_body["sandbox"]["busy"] >= 1:
                break
            time.sleep(0.05)
        out = api.tool(b, "def hello():\n    return 'hi'\n", name="hello")
        assert out["result"] == "hi", out
        assert finished == [], "session B waited for session A's spinning calls"
        _, status_body = api.call("GET", "/api/status")
        assert status_body["sandbox"]["busy"] == 1  # A's share: one worker of two
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_a_fork_loop_is_capped(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import os, time

        def f():
            forked = 0
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    return {"forked": forked, "error": type(exc).__name__}
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                forked += 1
            return {"forked": forked, "error": None}
    """,
    )
    assert out["error"] is None, out
    assert out["result"]["error"] == "BlockingIOError" and out["result"]["forked"] <= 16, out
    healthy(daemon)
    again = daemon.tool(daemon.session(), "def f():\n    return 1\n")
    assert again["result"] == 1  # the next call is not short of processes


def test_what_tools_may_do_still_works(daemon):
    """The spec's get_weather, bus.publish, the standard library, its own /tmp within a call."""
    sid = daemon.session()
    weather = daemon.tool(
        sid,
        """
        async def get_weather(location: str):
            return {"location": location, "temperature_c": 21}
    """,
        {"location": "Melbourne"},
        name="get_weather",
    )
    assert weather["result"] == {"location": "Melbourne", "temperature_c": 21}, weather
    out = daemon.tool(
        sid,
        """
        import datetime, json, math, re

        async def f():
            with open("/tmp/scratch.json", "w") as fh:
                json.dump({"pi": round(math.pi, 3)}, fh)
            with open("/tmp/scratch.json") as fh:
                saved = json.load(fh)
            event = await bus.publish("Computed", saved)
            return {"saved": saved, "match": bool(re.fullmatch(r"\\d+", "123")),
                    "year": datetime.date(2026, 1, 1).year, "event": event["event_type"]}
    """,
    )
    assert out["result"] == {"saved": {"pi": 3.142}, "match": True, "year": 2026, "event": "Computed"}, out
    status, events = daemon.call("GET", f"/api/sessions/{sid}/events?limit=100")
    assert "Computed" in [e["event_type"] for e in events["events"]]


def test_leftovers_of_a_killed_daemon_go_at_the_next_start():
    if os.geteuid() != 0:
        pytest.skip("cgroups are the daemon's only as root")
    home = short_home()
    second = None
    try:
        first = start_daemon(home, env={"API_WORKERS": "1"})
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        assert api.tool(api.session(), "def f():\n    return 1\n")["result"] == 1
        pid = first.proc.pid
        cgroups = [p for p in Path("/sys/fs/cgroup").rglob(f"llmgine-sandbox-{pid}") if p.is_dir()]
        assert cgroups, "a daemon as root keeps its workers in cgroups"
        first.proc.kill()
        first.proc.wait()
        assert all(p.exists() for p in cgroups)  # nothing of it ran to remove them
        second = start_daemon(home, env={"API_WORKERS": "1"})
        assert api.tool(api.session(), "def f():\n    return 2\n")["result"] == 2
        assert not any(p.exists() for p in cgroups)
        for entry in Path("/proc").iterdir():  # and none of its workers outlived it
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert f'"daemon": {pid},'.encode() not in cmdline, entry
    finally:
        if second is not None:
            stop_process(second.proc)
        shutil.rmtree(home, ignore_errors=True)


SCANNER = """
    import re

    def scan(needles):
        found = set()
        patterns = [re.compile(re.escape(n.encode()) + rb"[-A-Za-z0-9_]{0,40}") for n in needles]
        with open("/proc/self/mem", "rb", 0) as mem:
            for line in open("/proc/self/maps").read().splitlines():
                fields = line.split()
                if fields[1][0] != "r":
                    continue
                low, high = (int(x, 16) for x in fields[0].split("-"))
                if high - low > 200 * 2**20:
                    continue
                try:
                    mem.seek(low)
                    data = mem.read(high - low)
                except (OSError, ValueError, OverflowError):
                    continue
                for pattern in patterns:
                    for match in pattern.finditer(data):
                        text = match.group().decode(errors="replace")
                        if text not in needles:
                            found.add(text)
        return sorted(found)[:50]
"""


def test_a_later_call_finds_nothing_of_earlier_calls_in_its_memory(daemon):
    """Code, arguments and events of one session's calls, at the sizes that stayed in a worker's
    heap (about 130 KB), must not be readable by the next call of another session."""
    victim, attacker = daemon.session(), daemon.session()
    marks = [f"{kind}MARK{uuid.uuid4().hex[:12]}" for kind in ("CODE", "ARG", "EVT")]
    padding = "#" + "p" * 130_000
    code = f"""
        API_KEY = "sk-live-{marks[0]}-0123456789"
        {padding}
        def lookup(customer, notes):
            return len(customer) + len(notes)
    """
    out = daemon.tool(victim, code, {"customer": marks[1] + "-alice", "notes": "n" * 130_000}, name="lookup")
    assert out["error"] is None, out
    status, _ = daemon.call(
        "POST",
        f"/api/sessions/{victim}/events",
        {"event_type": "Paid", "data": {"card": marks[2], "pad": "q" * 130_000}},
    )
    assert status == 201
    for _ in range(3):
        found = daemon.tool(attacker, SCANNER, {"needles": marks}, name="scan")
        assert found["error"] is None and found["result"] == [], found
    # Nor at registration time, when the module's top level runs to be inspected.
    status, body = daemon.call(
        "POST",
        f"/api/sessions/{attacker}/tools",
        {
            "name": "g",
            "function_code": textwrap.dedent(SCANNER)
            + textwrap.dedent(f"""
            leaked = scan({marks!r})
            if leaked:
                raise RuntimeError(leaked)
            def g():
                return 1
        """),
        },
    )
    assert status == 201, body


def test_keyrings_memfd_and_new_namespaces_are_refused(daemon):
    """Kernel keyrings are per uid, not per namespace (a key would outlive the call, shared by
    every worker of the uid); memfd memory shows in no process's size; a namespace of its own
    is kernel surface no tool needs. The seccomp filter refuses them all with EPERM."""
    assert "seccomp" in daemon.sandbox["covers"], daemon.sandbox
    out = daemon.tool(
        daemon.session(),
        """
        import ctypes, errno, os, threading

        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            seen = {}

            def call(name, *args):
                ctypes.set_errno(0)
                seen[name] = (libc.syscall(*args), errno.errorcode.get(ctypes.get_errno()))

            call("add_key", 248, b"user", b"covert", b"data", 4, -4)  # KEY_SPEC_USER_KEYRING
            call("keyctl", 250, 0, -4, 0, 0, 0)  # KEYCTL_GET_KEYRING_ID
            call("unshare", 272, 0x10000000)  # CLONE_NEWUSER
            call("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
            try:
                os.memfd_create("hidden")
                seen["memfd_create"] = "created"
            except OSError as exc:
                seen["memfd_create"] = errno.errorcode[exc.errno]
            worker = threading.Thread(target=lambda: None)  # threads and fork still work
            worker.start()
            worker.join()
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            seen["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            return seen
    """,
    )
    assert out["error"] is None, out["error"]
    assert out["result"] == {
        "add_key": [-1, "EPERM"],
        "keyctl": [-1, "EPERM"],
        "unshare": [-1, "EPERM"],
        "clone_newuser": [-1, "EPERM"],
        "memfd_create": "EPERM",
        "fork": 7,
    }, out["result"]
