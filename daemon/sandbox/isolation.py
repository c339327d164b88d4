"""What keeps user code away from the daemon: bubblewrap for the view and the identity, cgroups
for memory and processes.

Each worker runs inside its own ``bwrap`` sandbox (see docs/sandbox.md for the whole model):

- **a filesystem of its own**: a read-only root holding only the Python installation (and the
  shared libraries it loads), the worker's own code and msgspec (read-only, under
  ``/opt/llmgine``), ``/dev/null``, ``/dev/zero``, ``/dev/urandom``, a ``/proc`` of its own PID
  namespace and a private, size-capped ``/tmp``. No LLMGINE_HOME, no socket, no home, no
  ``/etc``, no ``/sys``;
- **namespaces**: PID (the worker's zygote is PID 1: user code can neither signal nor trace
  it), network (no interface but a down loopback), IPC, UTS and cgroup;
- **identity**: a daemon started as root runs workers as ``sandbox.user`` (default ``nobody``),
  with no capabilities and ``no_new_privs``; a daemon started as a normal user runs them as
  itself in a user namespace that may not create further ones (``--disable-userns``): the
  filesystem view is what protects that user's files.

``sandbox.isolation = "none"`` (an explicit choice, warned about at every start) runs workers
without bubblewrap, with rlimits only. Without bubblewrap and without that choice, user code
is refused with ``SANDBOX_UNAVAILABLE`` and a one-line fix: never a silent fallback.

Probed once per process (the machine does not change); reported under ``sandbox`` in
``/api/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llmgine_daemon.aio import killpg, spawn
from llmgine_daemon.sandbox import seccomp
from llmgine_daemon.sandbox.cleanup import wipe
from llmgine_daemon.sandbox.procs import child_pid as child_pid  # (re-exported)
from llmgine_daemon.sandbox.procs import count_tasks as count_tasks

log = logging.getLogger("llmgine.sandbox")

# Where the worker's own code is mounted inside the sandbox (on its sys.path, read-only).
SITE = "/opt/llmgine"
TMP = "/tmp"
FIX_INSTALL = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    'bubblewrap), or set sandbox.isolation = "none" to run user code without isolation'
)
# What bubblewrap isolation covers, as /api/status reports it (docs/sandbox.md explains each).
COVERS = ["filesystem", "identity", "capabilities", "no_new_privs", "processes", "network", "ipc", "per-call cleanup"]


@dataclass
class Isolation:
    """The mechanism in use. ``mechanism``: bubblewrap | none | unavailable."""

    mechanism: str = "none"
    reason: str = ""  # unavailable: why, with the fix
    bwrap: str = ""
    uid: int | None = None  # the identity workers drop to (a daemon run as root)
    gid: int | None = None
    user_namespace: bool = False  # bwrap made a user namespace (a daemon not run as root)
    python: str = ""  # the interpreter run inside the sandbox
    covers: list[str] = field(default_factory=list)

    @property
    def sandboxed(self) -> bool:
        return self.mechanism == "bubblewrap"

    def worker_argv(self, config: str, tmp_bytes: int, seccomp_fd: int | None = None) -> list[str]:
        """argv that starts one worker (a zygote that forks a child per call). ``seccomp_fd``:
        a descriptor the filter can be read from (``seccomp_pipe()``), passed to the child."""
        if not self.sandboxed:
            return [self.python, "-I", "-m", "llmgine_daemon.sandbox.worker", config]
        # The configuration goes in the environment, read and cleared at boot: inside the
        # sandbox /proc/1/cmdline is readable by user code, /proc/1/environ is not (and the
        # worker zeroes its copy, which each call's /proc/self/environ would show).
        args = bwrap_args(self, tmp_bytes)[:-1]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        return [*args, "--setenv", "LLMGINE_WORKER", config, "--", self.python, "-I", "-S", "-c", _BOOT]


def seccomp_pipe() -> int | None:
    """The read end of a pipe holding the seccomp filter (the caller closes it once the child
    has it), or None where no filter exists for this architecture."""
    if not seccomp.supported():
        return None
    data = seccomp.program()
    read, write = os.pipe()
    try:
        os.write(write, data)  # a few hundred bytes: well within a pipe's buffer
    finally:
        os.close(write)
    return read


# Inside the sandbox: no site-packages (-S), only the worker's own code on the path.
_BOOT = f"import sys; sys.path.insert(0, {SITE!r}); from llmgine_daemon.sandbox.worker import main; main()"


def _package_dir(name: str) -> Path:
    module = __import__(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


def _python_paths(python: str) -> list[Path]:
    """What the interpreter needs: its installation prefixes and the system library dirs."""
    real = Path(os.path.realpath(python))
    wanted = [Path(sys.base_prefix), Path(sys.base_exec_prefix), real.parent.parent]
    for top in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32"):
        wanted.append(Path(top))
    found: list[Path] = []
    for path in wanted:
        path = Path(os.path.realpath(path))
        if path.is_dir() and not any(path == p or p in path.parents for p in found):
            found = [p for p in found if path not in p.parents]
            found.append(path)
    return found


def site_dirs() -> list[Path]:
    """Where third-party packages of the interpreter live (its own and a distribution's)."""
    import sysconfig

    found: set[Path] = set()
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    for scheme in sysconfig.get_scheme_names():
        if not scheme.startswith("posix"):
            continue
        try:
            paths = sysconfig.get_paths(scheme, vars=base)
        except KeyError:
            continue
        found.update(Path(paths[k]) for k in ("purelib", "platlib") if k in paths)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found.update(
        [
            Path("/usr/lib/python3/dist-packages"),
            Path(f"/usr/lib/{version}/dist-packages"),
            Path(f"/usr/local/lib/{version}/dist-packages"),
        ]
    )
    return sorted(p for p in found if _plain(p))


def _plain(path: Path) -> bool:
    """Not a link, and within this user's reach: the user scheme's site-packages sits under
    $HOME, which may be a directory this user cannot enter (a daemon started with another
    user's HOME): stat() then fails, and a worker could not see that directory either. (It
    raised, and the sandbox failed to start with no reason given.)"""
    try:
        return not path.is_symlink()
    except OSError:
        return False


def bwrap_args(iso: Isolation, tmp_bytes: int) -> list[str]:
    args = [
        iso.bwrap,
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    if iso.user_namespace:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    else:
        # Root: the worker needs exactly these two to become sandbox.user, then has none.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    made: set[str] = {"/"}

    def parents(dest: str) -> None:
        for parent in reversed(Path(dest).parents):
            if str(parent) not in made:
                args.extend(["--perms", "0755", "--dir", str(parent)])
                made.add(str(parent))

    bound: list[Path] = []

    def ro_bind(src: Path, dest: str) -> None:
        parents(dest)
        args.extend(["--ro-bind", str(src), dest])
        made.add(dest)
        bound.append(Path(dest))

    for path in _python_paths(iso.python):
        ro_bind(path, str(path))
    for top in ("/lib", "/lib64", "/lib32", "/libx32", "/bin"):
        if os.path.islink(top):
            args.extend(["--symlink", os.readlink(top), top])
        elif os.path.isdir(top) and top != "/bin":
            ro_bind(Path(top), top)
    # Only the standard library: third-party packages beside it are hidden (an empty,
    # read-only directory over each), so what user code can import is what the docs say.
    for hidden in site_dirs():
        if hidden.is_dir() and any(hidden == b or b in hidden.parents for b in bound):
            args.extend(["--tmpfs", str(hidden), "--remount-ro", str(hidden)])
    ro_bind(_package_dir("llmgine_daemon"), f"{SITE}/llmgine_daemon")
    ro_bind(_package_dir("msgspec"), f"{SITE}/msgspec")
    parents("/dev/null")
    for dev in ("null", "zero", "urandom"):
        args.extend(["--dev-bind", f"/dev/{dev}", f"/dev/{dev}"])
    args += [
        "--mqueue",
        "/dev/mqueue",  # so the zygote can see (and refuse) queues left behind
        "--proc",
        "/proc",
        "--perms",
        "1777",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        TMP,
        "--chdir",
        TMP,
        "--remount-ro",
        "/",
        "--",
    ]
    return args


async def _run(argv: list[str], pass_fds: tuple[int, ...] = ()) -> tuple[int | None, str]:
    try:
        proc = await spawn(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={},
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except OSError as exc:
        return None, str(exc)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        return proc.returncode, err.decode(errors="replace").strip()
    except TimeoutError:
        return None, "timed out"
    finally:
        if proc.returncode is None:  # too slow, or the daemon is stopping: leave nothing behind
            killpg(proc.pid)
            # ...and reap it, so its pipes close on this loop (a transport left for the garbage
            # collector prints a traceback once the loop is closed: a start-up that failed).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)


def resolve_identity(user: str, group: str) -> tuple[int, int]:
    """(uid, gid) of ``sandbox.user``/``sandbox.group`` (names or numbers)."""
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else None
    except KeyError:
        raise ValueError(f"sandbox.user {user!r} does not exist on this machine") from None
    uid = entry.pw_uid if entry is not None else int(user)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            import grp

            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ValueError(f"sandbox.group {group!r} does not exist") from None
    else:
        gid = entry.pw_gid if entry is not None else uid
    if uid == 0 or gid == 0:
        raise ValueError("sandbox.user and sandbox.group must not be root")
    return uid, gid


async def probe(mode: str, python: str, user: str = "nobody", group: str = "") -> Isolation:
    """The isolation this machine gives user code. ``mode``: auto | bubblewrap | none."""
    real_python = os.path.realpath(python)  # a venv's python is a link to the base one
    if mode == "none":
        return Isolation("none", python=python)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation("unavailable", f"bubblewrap (bwrap) is not installed: {FIX_INSTALL}", python=real_python)
    iso = Isolation("bubblewrap", bwrap=bwrap, python=real_python, covers=list(COVERS))
    if os.geteuid() == 0:
        try:
            iso.uid, iso.gid = resolve_identity(user, group)
        except ValueError as exc:
            return Isolation("unavailable", f"{exc}: set sandbox.user to an unprivileged user", python=real_python)
    else:
        iso.user_namespace = True
    fd = seccomp_pipe()
    try:
        argv = iso.worker_argv("{}", 1 << 20, fd)
        code, err = await _run(
            [*argv[: argv.index("--") + 2], "-I", "-S", "-c", "pass"], pass_fds=(fd,) if fd is not None else ()
        )
    finally:
        if fd is not None:
            os.close(fd)
    if seccomp.supported():
        iso.covers.append("seccomp")
    if code == 0:
        return iso
    why = err.splitlines()[-1] if err else f"exit status {code}"
    fix = FIX_INSTALL
    if "/proc" in why:
        fix = (
            "bubblewrap needs to read /proc/sys as this user: make /proc readable "
            "(it is mode 0700 here), run the daemon as root, or set sandbox.isolation = "
            '"none"'
        )
    elif "namespace" in why.lower() or "permission" in why.lower():
        fix = (
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "or user.max_user_namespaces > 0), run the daemon as root, or set "
            'sandbox.isolation = "none"'
        )
    return Isolation("unavailable", f"bubblewrap cannot start a sandbox here ({why}): {fix}", python=real_python)


# -- cgroups: memory and processes per worker (root only) ---------------------------------------

_CONTROLLERS = ("pids", "memory", "cpu")
# The files that show a controller is on in a cgroup (v2's name first, then v1's).
_MARKERS = {
    "pids": ("pids.max",),
    "memory": ("memory.max", "memory.limit_in_bytes"),
    "cpu": ("cpu.weight", "cpu.shares"),
}


class Cgroups:
    """A cgroup per worker under one parent per controller for this daemon; root only, v1 or v2.

    pids caps the processes a call may run (RLIMIT_NPROC does not bind root, and counts a uid's
    tasks host-wide); memory caps the whole worker: every process user code forks is counted;
    cpu makes the worker one entity of the scheduler, whatever it forks: 30 spinning processes,
    each in a session of its own (an autogroup each), took 30 shares of the CPU from the daemon
    and the other sessions' workers.
    """

    def __init__(self, parents: dict[str, Path]) -> None:
        self.parents = parents  # controller -> this daemon's parent cgroup

    @classmethod
    async def create(cls, suffix: str = "") -> Cgroups | None:
        if os.geteuid() != 0:  # (suffix "-mcp": the MCP servers', mcp/cgroups.py)
            return None
        name = f"llmgine-sandbox-{os.getpid()}{suffix}"
        parents: dict[str, Path] = {}
        for controller, base in _hierarchies():
            if controller in parents:
                continue
            await remove_stale(base)
            parent = base / name
            try:
                parent.mkdir(exist_ok=True)
                if (base / "cgroup.subtree_control").exists() and not _has(parent, controller):
                    # cgroup v2: the controller must be enabled for the parent's children.
                    (parent / "cgroup.subtree_control").write_text(f"+{controller}")
                probe = parent / "probe"
                probe.mkdir(exist_ok=True)
                ok = _has(probe, controller)
                probe.rmdir()
                if ok:
                    parents[controller] = parent
                    continue
                parent.rmdir()
            except OSError:
                _rmdir(parent)
        return cls(parents) if parents else None

    @property
    def controllers(self) -> list[str]:
        return sorted(self.parents)

    def make(self, worker_name: str, max_pids: int, memory_bytes: int, *, nest: bool = False) -> list[Path]:
        """A cgroup under each parent (``worker_name`` may name one made before, then one below
        it: ``nest`` makes one that holds others, cgroup v2's controllers enabled below it)."""
        made: list[Path] = []
        for controller, parent in self.parents.items():
            path = parent / worker_name
            try:
                path.mkdir(exist_ok=True)
                if nest and (path / "cgroup.subtree_control").exists():
                    (path / "cgroup.subtree_control").write_text(f"+{controller}")
                if controller == "pids":
                    (path / "pids.max").write_text(str(max_pids))
                elif controller == "cpu":
                    pass  # the default weight: as much as any other worker, or the daemon
                elif (path / "memory.max").exists():  # v2
                    (path / "memory.max").write_text(str(memory_bytes))
                    _try_write(path / "memory.swap.max", "0")
                    # A kill for memory takes the whole run, not one process of it; but not a
                    # holder's: that would take every run in it (all a session's servers).
                    _try_write(path / "memory.oom.group", "0" if nest else "1")
                else:  # v1
                    (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    _try_write(path / "memory.memsw.limit_in_bytes", str(memory_bytes))
                made.append(path)
            except OSError as exc:
                log.warning("sandbox: cannot create cgroup %s: %s", path, exc)
        return made

    @staticmethod
    def join(paths: list[Path], pid: int) -> bool:
        ok = True
        for path in paths:
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                log.warning("sandbox: cannot move pid %d into %s: %s", pid, path, exc)
                ok = False
        return ok

    @staticmethod
    def oom_kills(paths: list[Path]) -> int:
        """How many processes the kernel killed for memory in these cgroups so far."""
        for path in paths:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    for line in (path / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
                except (OSError, ValueError):
                    continue
        return 0

    @staticmethod
    def kill_all(path: Path) -> None:
        """SIGKILL every process still in the cgroup (a fork bomb's survivors)."""
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass

    async def close(self) -> None:
        for parent in self.parents.values():
            await close_parent(parent)

    async def release(self, paths: list[Path]) -> None:
        for path in paths:
            await release(path)


def _has(path: Path, controller: str) -> bool:
    return any((path / name).exists() for name in _MARKERS[controller])


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


async def release(path: Path) -> None:
    """Empty and remove one worker's cgroup, and those below it (an MCP session's holds its
    servers'); killed processes take a moment to go."""
    await close_parent(path, remove=False)
    for _ in range(50):
        if _rmdir(path):
            return
        Cgroups.kill_all(path)
        await asyncio.sleep(0.02)
    log.warning("sandbox: cgroup %s still busy; left behind", path)


async def close_parent(parent: Path, *, remove: bool = True) -> None:
    try:
        children = [c for c in parent.iterdir() if c.is_dir()]
    except OSError:
        children = []
    for child in children:
        await release(child)
    if remove:
        _rmdir(parent)


def _gone(name: str) -> bool:
    """Whether the daemon whose pid ends ``name`` (llmgine-sandbox-PID[-...]) is gone."""
    parts = name.split("-")
    pid = parts[2] if len(parts) > 2 else ""
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


async def remove_stale(base: Path) -> None:
    """Remove the cgroups of daemons that are gone (killed with SIGKILL: nothing of theirs ran
    to remove them), with any process still in them."""
    try:
        candidates = list(base.glob("llmgine-sandbox-*"))
    except OSError:
        return
    for parent in candidates:
        if _gone(parent.name):
            await close_parent(parent)
            if not parent.exists():
                log.info("sandbox: removed the cgroup %s of a daemon that is gone", parent)


def remove_stale_dirs(root: str | None = None) -> int:
    """Remove the worker directories (``llmgine-sandbox-PID-w*``, isolation "none") of daemons
    that are gone. Returns how many were removed."""
    removed = 0
    base = Path(root or tempfile.gettempdir())
    try:
        candidates = list(base.glob("llmgine-sandbox-*"))
    except OSError:
        return 0
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and _gone(path.name):
            if wipe(str(path)):  # (not shutil.rmtree: its recursion fails on a deep tree)
                with contextlib.suppress(OSError):
                    path.rmdir()
            if not path.exists():
                removed += 1
                log.info("sandbox: removed %s, left by a daemon that is gone", path)
    return removed


def _hierarchies() -> list[tuple[str, Path]]:
    """(controller, our own cgroup in its hierarchy) for pids, memory and cpu, v1 or v2."""
    found: list[tuple[str, Path]] = []
    own: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else ["<v2>"]:
                own[c] = path
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        left, _, right = line.partition(" - ")
        fstype, _, options = (right.split(" ") + ["", "", ""])[:3]
        mountpoint = Path(left.split(" ")[4])
        if fstype == "cgroup":
            for controller in _CONTROLLERS:
                if controller in options.split(","):
                    found.append((controller, mountpoint / own.get(controller, "/").lstrip("/")))
        elif fstype == "cgroup2":
            path = mountpoint / own.get("<v2>", "/").lstrip("/")
            try:
                available = (path / "cgroup.controllers").read_text().split()
            except OSError:
                available = []
            for controller in _CONTROLLERS:
                if controller in available:
                    found.append((controller, path))
    return found
