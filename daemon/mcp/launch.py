"""How a stdio MCP server's process is started.

Untrusted (the default): under bubblewrap, with the view of a sandbox worker
(sandbox/isolation.py ``bwrap_args``: a read-only root holding the Python installation and
system libraries, no LLMGINE_HOME, no home, a private /tmp, PID/IPC/UTS namespaces, the
seccomp filter) and no network, in a user namespace with no capabilities, as the daemon's
user. Only these are added, read-only: the directory of the command (the root of its
virtualenv when it is in one), the interpreter's site-packages (hidden from sandbox workers;
a Python server needs them), and for registrations made with an API key or by the socket
owner the directories of the arguments that are existing absolute paths and the
registration's ``mounts``. ``--die-with-parent`` ends the sandbox (the whole PID namespace)
when the daemon dies, even by SIGKILL.

Trusted: a plain child of the daemon, in a process group of its own (killed whole), with
``PR_SET_PDEATHSIG`` so it dies with the daemon; only the socket owner and API keys may ask
for it (bus/mcp_servers.py).

The environment is passed to the process in its environment, never on a command line
(``/proc/PID/cmdline`` is readable by every user): bubblewrap runs without ``--clearenv`` and
is given only a minimal environment and the registration's variables.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from llmgine_daemon.aio import spawn
from llmgine_daemon.mcp.cgroups import join as join_cgroup
from llmgine_daemon.sandbox.calls import SandboxLimits
from llmgine_daemon.sandbox.isolation import SITE, Isolation, bwrap_args, count_tasks, seccomp_pipe, site_dirs
from llmgine_daemon.sandbox.worker_process import rlimits_of

# Top-level directories that may be links into /usr, which bwrap_args recreates as links.
_LINKED_TOPS = tuple(Path(top) for top in ("/bin", "/lib", "/lib64", "/lib32", "/libx32"))
# The largest JSON-RPC message (one line) read from a server.
MAX_LINE = 16 * 2**20
# /tmp inside the sandbox.
TMP_BYTES = 64 * 2**20
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_PR_SET_PDEATHSIG = 1


class LaunchError(Exception):
    """The server cannot be started (no sandbox, no such command): not worth retrying soon."""


@dataclass
class Launch:
    command: str
    args: list[str]
    env: dict[str, str]
    trusted: bool
    mounts: list[str] = field(default_factory=list)  # read-only, besides the command's own
    auto_mounts: bool = True  # the arguments' directories (not for session-token registrations)
    # A session token's server: a sandbox worker's limits (memory, processes, file size, open
    # files) and, for a daemon run as root, its identity (sandbox.user). None: the daemon's.
    limits: SandboxLimits | None = None
    # With ``limits``: its RLIMIT_CPU (mcp.session_token_cpu_seconds; 0: none), and it runs at
    # the lowest CPU priority (sandbox/confine.py ``lower_priority``).
    cpu_seconds: int = 0


# Run first inside the sandbox for a confined server (``Launch.limits``): the sandbox's user
# for a root daemon (bwrap left it CAP_SETUID/CAP_SETGID only, which dropping to another uid
# clears), a worker's limits, then the server itself in the same process (sandbox/confine.py).
_CONFINE = f"import sys; sys.path.insert(0, {SITE!r}); from llmgine_daemon.sandbox.confine import main; main()"


def confinement(
    iso: Isolation, limits: SandboxLimits, cpu_seconds: int = 0, uid: int | None = None
) -> dict[str, object]:
    """What ``_CONFINE`` sets: a sandbox worker's rlimits, RLIMIT_NPROC counted as the pool
    counts it (in bubblewrap's user namespace only the namespace's tasks; as a uid every task
    of that uid), RLIMIT_CPU, the identity to drop to (a root daemon: ``uid``, the one the pool
    lent this run from sandbox.uids, else sandbox.user), and the lowest CPU priority
    (``idle``): a server lives as long as its session, and N of them spinning took N cores
    from the daemon and every other session, with no cgroup ``cpu.max`` here."""
    uid = uid if uid is not None else iso.uid
    identity = [uid, iso.gid] if os.geteuid() == 0 and uid is not None else None
    nproc = limits.processes + (count_tasks(uid) if identity and uid is not None else 0)
    rlimits = {**rlimits_of(limits, nproc), "cpu_seconds": cpu_seconds}
    return {"limits": rlimits, "identity": identity, "idle": True}


def resolve_command(command: str) -> str:
    found = shutil.which(command) if "/" not in command else command
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise LaunchError(f"command {command!r} not found or not executable")
    return os.path.abspath(found)


def readable_dirs(launch: Launch, executable: str) -> list[str]:
    """What the sandbox binds read-only for this server."""
    wanted: list[Path] = []
    home = Path(executable).parent
    # A virtualenv's bin/: the whole environment (its site-packages, pyvenv.cfg).
    wanted.append(home.parent if (home.parent / "pyvenv.cfg").exists() else home)
    wanted.append(Path(os.path.realpath(home)))
    # The interpreter's third-party packages, which a sandbox worker does not see: a server
    # written in Python (with the SDK) installed there needs them. Code, no data of anyone's.
    wanted.extend(site_dirs())
    if launch.auto_mounts:
        for arg in launch.args:
            if arg.startswith("/") and os.path.isfile(arg):
                wanted.append(Path(arg).parent)
        wanted.extend(Path(m) for m in launch.mounts)
    found: list[Path] = []
    for path in wanted:
        path = Path(os.path.abspath(path))
        if any(path == top or top in path.parents for top in _LINKED_TOPS if top.is_symlink()):
            # /bin -> usr/bin (merged /usr): the view has the link already (bwrap_args), and
            # binding onto it failed ("Can't bind mount /oldroot/usr/bin on /newroot/bin"), so
            # no server under /bin started; bind where it leads.
            path = Path(os.path.realpath(path))
        if path == Path("/") or not path.exists():
            continue
        if not any(path == p or p in path.parents for p in found):
            found = [p for p in found if path not in p.parents]
            found.append(path)
    return [str(p) for p in found]


def sandbox_argv(
    iso: Isolation, launch: Launch, executable: str, seccomp_fd: int | None, uid: int | None = None
) -> list[str]:
    confine = confinement(iso, launch.limits, launch.cpu_seconds, uid) if launch.limits is not None else None
    sandboxed = Isolation(
        "bubblewrap",
        bwrap=iso.bwrap,
        python=iso.python,
        # A confined server of a root daemon becomes sandbox.user (no user namespace then:
        # bwrap keeps it CAP_SETUID/CAP_SETGID for that, as for the workers); else the
        # daemon's user, in a user namespace with no capabilities.
        user_namespace=confine is None or confine["identity"] is None,
        covers=list(iso.covers),
    )
    args = bwrap_args(sandboxed, TMP_BYTES)[:-1]  # without the final "--"
    args.remove("--clearenv")  # the environment is the process's own (see the docstring)
    # After /tmp's tmpfs (a mount under /tmp would be hidden by it), before / goes read-only.
    at = len(args) - 1 - args[::-1].index("--remount-ro")
    extra: list[str] = []
    for directory in readable_dirs(launch, executable):
        for parent in reversed(Path(directory).parents):
            if str(parent) != "/":
                extra += ["--dir", str(parent)]
        extra += ["--ro-bind", directory, directory]
    args = args[:at] + extra + args[at:]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if confine is not None:
        config = json.dumps({**confine, "argv": [executable, *launch.args]})
        return [*args, "--", iso.python, "-I", "-S", "-c", _CONFINE, config]
    return [*args, "--", executable, *launch.args]


def _die_with_parent(cgroup: list[Path]) -> None:
    join_cgroup(cgroup)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def start(
    iso: Isolation | None, launch: Launch, cgroup: list[Path] | None = None, uid: int | None = None
) -> asyncio.subprocess.Process:
    """Start the server with pipes for stdin, stdout and stderr; raises LaunchError. With
    ``cgroup`` (mcp/cgroups.py) the process joins it before it runs, and all it starts with it;
    ``uid``: the one a confined server of a root daemon drops to (``confinement``)."""
    executable = resolve_command(launch.command)
    env = {**BASE_ENV, **launch.env}
    common = {
        "stdin": asyncio.subprocess.PIPE,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.PIPE,
        "env": env,
        "start_new_session": True,
        "limit": MAX_LINE,
        "close_fds": True,
    }
    if cgroup:
        common["preexec_fn"] = functools.partial(join_cgroup, cgroup)
    if launch.trusted or (iso is not None and iso.mechanism == "none"):
        try:
            common["preexec_fn"] = functools.partial(_die_with_parent, cgroup or [])
            return await spawn(executable, *launch.args, **common)
        except (OSError, subprocess.SubprocessError) as exc:
            raise LaunchError(f"cannot start {launch.command!r}: {exc}") from None
    if iso is None or not iso.sandboxed:
        why = iso.reason if iso is not None and iso.reason else "the sandbox is not available"
        raise LaunchError(f"an untrusted stdio server runs in the sandbox: {why}")
    fd = seccomp_pipe()
    try:
        argv = sandbox_argv(iso, launch, executable, fd, uid)
        return await spawn(*argv, pass_fds=(fd,) if fd is not None else (), cwd="/", **common)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LaunchError(f"cannot start bubblewrap for {launch.command!r}: {exc}") from None
    finally:
        if fd is not None:
            os.close(fd)
