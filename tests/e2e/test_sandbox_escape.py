"""User code attacks the daemon that runs it: a real llmgined (as root here, as CI runs it),
real bubblewrap workers. Every attempt must fail and the daemon keep answering.

Each tool gets what it would need to aim at the daemon (LLMGINE_HOME, the socket path, the TCP
port, the daemon's pid) as arguments: hiding them would prove nothing.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e import sandbox_harness
from tests.e2e.sandbox_harness import (
    healthy,
)

# The real daemons, as root and as a normal user (a module-scoped fixture, by its name here).
daemon = sandbox_harness.daemon

# One xdist worker runs them all: the daemon-as-a-normal-user variant creates a system user
# (and removes it at the end), which two workers must not do at once.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("unprivileged-user")]


def test_the_daemons_files_socket_and_port_are_out_of_reach(daemon):
    home = Path(daemon.home)
    targets = [str(p) for p in home.rglob("*")] + [str(home)]
    assert any(t.endswith("local.key") for t in targets)
    ports = [daemon.port]
    if daemon.database_url:  # on PostgreSQL: its server's port, and where the daemon holds its URL
        ports.append(urlsplit(daemon.database_url).port)
        targets += [f"/proc/{daemon.pid}/environ", f"/proc/{daemon.pid}/cmdline"]
    out = daemon.tool(
        daemon.session(),
        """
        import os, socket

        def f(home, targets, socket_path, ports, daemon_pid):
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
                for port in ports:
                    try:
                        socket.create_connection((host, port), timeout=1)
                        attempts[f"{host}:{port}"] = "connected"
                    except OSError as exc:
                        attempts[f"{host}:{port}"] = type(exc).__name__
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
            "ports": ports,
            "daemon_pid": daemon.pid,
        },
    )
    assert out["error"] is None, out["error"]
    result = out["result"]
    assert result["seen"] == {}, result["seen"]
    assert len(result["attempts"]) == 2 * len(ports) + 2
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
    every worker of the uid); memfd memory shows in no process's size; file watches (inotify,
    fanotify) see the opens of every process on the host in the read-only binds; a namespace of its own
    is kernel surface no tool needs; vsock sockets are not confined by the network namespace.
    The seccomp filter refuses them all with EPERM."""
    assert "seccomp" in daemon.sandbox["covers"], daemon.sandbox
    out = daemon.tool(
        daemon.session(),
        """
        import ctypes, errno, fcntl, os, socket, threading

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
            # File watches see every process that opens a file in the read-only binds, the
            # host's and other sessions' workers too (which modules another call imports).
            call("inotify_init1", 294, 0)
            call("inotify_add_watch", 254, -1, os.__file__.encode(), 0x20)
            call("fanotify_init", 300, 0x200, 0)  # FAN_REPORT_FID: allowed unprivileged
            call("fanotify_mark", 301, -1, 1, 0x20, -100, os.__file__.encode())
            # dnotify (the same, directory by directory) and leases (on a file it owns: a
            # daemon not run as root may own the interpreter it binds in).
            for name, cmd, arg, path in [
                ("F_NOTIFY", fcntl.F_NOTIFY, fcntl.DN_ACCESS, os.path.dirname(os.__file__)),
                ("F_SETLEASE", fcntl.F_SETLEASE, fcntl.F_RDLCK, "/tmp/mine"),
            ]:
                if path == "/tmp/mine":
                    open(path, "w").close()
                fd = os.open(path, os.O_RDONLY)
                try:
                    fcntl.fcntl(fd, cmd, arg)
                    seen[name] = "set"
                except OSError as exc:
                    seen[name] = errno.errorcode[exc.errno]
                finally:
                    os.close(fd)
            seen["F_GETFL"] = fcntl.fcntl(0, fcntl.F_GETFL) >= 0  # the rest of fcntl works
            try:
                os.memfd_create("hidden")
                seen["memfd_create"] = "created"
            except OSError as exc:
                seen["memfd_create"] = errno.errorcode[exc.errno]
            # vsock is not network-namespaced: the hypervisor's (a host's guests') services.
            for family in ("AF_VSOCK", "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"):
                kind = socket.SOCK_DGRAM if family == "AF_NETLINK" else socket.SOCK_STREAM
                try:
                    socket.socket(getattr(socket, family), kind).close()
                    seen[family] = "created"
                except OSError as exc:
                    seen[family] = errno.errorcode[exc.errno]
            # Netlink: only NETLINK_ROUTE (the C library's getaddrinfo and getifaddrs, in the
            # worker's own network namespace). NETLINK_KOBJECT_UEVENT carried the host's device
            # events into the sandbox (a root daemon's network namespace is the host user
            # namespace's); the other protocols are kernel surface no tool needs.
            for name, protocol in (("NETLINK_UEVENT", 15), ("NETLINK_GENERIC", 16), ("NETLINK_SOCK_DIAG", 4)):
                try:
                    socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol).close()
                    seen[name] = "created"
                except OSError as exc:
                    seen[name] = errno.errorcode[exc.errno]
            seen["getaddrinfo"] = len(socket.getaddrinfo("127.0.0.1", 80, flags=socket.AI_ADDRCONFIG)) > 0
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
        "inotify_init1": [-1, "EPERM"],
        "inotify_add_watch": [-1, "EPERM"],
        "fanotify_init": [-1, "EPERM"],
        "fanotify_mark": [-1, "EPERM"],
        "F_NOTIFY": "EPERM",
        "F_SETLEASE": "EPERM",
        "F_GETFL": True,
        "memfd_create": "EPERM",
        "AF_VSOCK": "EPERM",
        "AF_UNIX": "created",
        "AF_INET": "created",
        "AF_INET6": "created",
        "AF_NETLINK": "created",
        "NETLINK_UEVENT": "EPERM",
        "NETLINK_GENERIC": "EPERM",
        "NETLINK_SOCK_DIAG": "EPERM",
        "getaddrinfo": True,
        "fork": 7,
    }, out["result"]


def test_the_workers_configuration_is_not_in_the_calls_environment(daemon):
    """The pool hands the worker its configuration in the environment (its command line is
    readable in the sandbox) and the worker clears it at boot; but /proc/self/environ reads
    the strings the kernel put on the stack, which clearing os.environ leaves, and every
    call's child is a fork of that memory: user code read the daemon's host pid, the uid and
    the limits there."""
    out = daemon.tool(
        daemon.session(),
        """
        import os

        def f():
            with open("/proc/self/environ", "rb") as fh:
                raw = fh.read()
            return {"environ": raw.replace(b"\\0", b" ").decode().strip(), "os.environ": dict(os.environ)}
        """,
    )
    assert out["error"] is None, out["error"]
    assert "LLMGINE_WORKER" not in out["result"]["environ"] and "daemon" not in out["result"]["environ"], out
    assert out["result"]["os.environ"] == {}, out
