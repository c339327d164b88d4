"""What the machine lets us add on top of rlimits: namespaces (via util-linux ``unshare``) and a
pids cgroup (the only process cap that also binds root, whom RLIMIT_NPROC exempts).

Probed once when the pool starts; the result is reported in ``/api/status`` under ``sandbox``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from llmgine_daemon.aio import killpg, spawn

log = logging.getLogger("llmgine.sandbox")

# Strongest first. --kill-child: when the unshare process dies (we kill its process group on a
# deadline) its child, PID 1 of the new namespace, dies too, and with it every process in it.
# --mount-proc gives the namespace its own /proc, so user code cannot read other processes'
# command lines or environments.
_CANDIDATES: list[tuple[list[str], list[str]]] = [
    (["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"],
     ["net", "pid", "mount"]),
    (["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount",
      "--mount-proc"], ["user", "net", "pid", "mount"]),
    (["--net"], ["net"]),
    (["--user", "--map-root-user", "--net"], ["user", "net"]),
]


@dataclass
class Isolation:
    prefix: list[str] = field(default_factory=list)  # argv before the interpreter
    namespaces: list[str] = field(default_factory=list)

    @property
    def level(self) -> str:
        return "namespaces" if self.namespaces else "rlimits"


async def _works(argv: list[str]) -> bool:
    try:
        proc = await spawn(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env={}, start_new_session=True,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), 10) == 0
    except TimeoutError:
        return False
    finally:
        if proc.returncode is None:  # too slow, or the daemon is stopping: leave nothing behind
            killpg(proc.pid)


async def probe(mode: str, python: str) -> Isolation:
    """The strongest isolation that works here. ``mode``: auto | namespaces | none."""
    if mode == "none":
        return Isolation()
    unshare = shutil.which("unshare")
    if unshare:
        for flags, names in _CANDIDATES:
            argv = [unshare, *flags]
            if await _works([*argv, python, "-I", "-c", "pass"]):
                return Isolation(argv, names)
    if mode == "namespaces":
        raise RuntimeError(
            "sandbox.isolation = namespaces, but no network/PID namespace can be created here "
            "(needs util-linux unshare and root or unprivileged user namespaces)"
        )
    log.warning("sandbox: namespaces unavailable; running user code with rlimits only")
    return Isolation()


class PidsCgroup:
    """A pids cgroup per worker under one parent for this daemon; root only, v1 or v2."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    async def create(cls) -> PidsCgroup | None:
        if os.geteuid() != 0:
            return None
        name = f"llmgine-sandbox-{os.getpid()}"
        for base in _pids_hierarchies():
            parent = base / name
            await cls.remove_stale(base)
            try:
                parent.mkdir(exist_ok=True)
                if not (parent / "pids.max").exists():
                    # cgroup v2: the controller must be enabled for the parent's children.
                    (parent / "cgroup.subtree_control").write_text("+pids")
                probe = parent / "probe"
                probe.mkdir(exist_ok=True)
                ok = (probe / "pids.max").exists()
                probe.rmdir()
                if ok:
                    return cls(parent)
                parent.rmdir()
            except OSError:
                try:
                    parent.rmdir()
                except OSError:
                    pass
        return None

    @classmethod
    async def remove_stale(cls, base: Path) -> None:
        """Remove the cgroups of daemons that are gone (killed with SIGKILL: nothing of theirs
        ran to remove them), with any process still in them."""
        try:
            candidates = list(base.glob("llmgine-sandbox-*"))
        except OSError:
            return
        for parent in candidates:
            pid = parent.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue  # a daemon that still runs (or a pid reused since: left alone)
            await cls(parent).close()  # what that daemon would have done on its way out
            if not parent.exists():
                log.info("sandbox: removed the cgroup %s of a daemon that is gone", parent)

    def make(self, worker_name: str, max_pids: int) -> Path | None:
        path = self.parent / worker_name
        try:
            path.mkdir(exist_ok=True)
            (path / "pids.max").write_text(str(max_pids))
            return path
        except OSError as exc:
            log.warning("sandbox: cannot create cgroup %s: %s", path, exc)
            return None

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

    @staticmethod
    def remove(path: Path) -> bool:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    async def close(self) -> None:
        for child in list(self.parent.glob("*")):
            if child.is_dir():
                await self.release(child)
        self.remove(self.parent)

    async def release(self, path: Path) -> None:
        """Empty and remove one worker's cgroup; killed processes take a moment to go."""
        for _ in range(50):
            if self.remove(path):
                return
            self.kill_all(path)
            await asyncio.sleep(0.02)
        log.warning("sandbox: cgroup %s still busy; left behind", path)


def _pids_hierarchies() -> list[Path]:
    """Where the pids controller is mounted, with our own cgroup path appended."""
    found: list[Path] = []
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
        if fstype == "cgroup" and "pids" in options.split(","):
            found.append(mountpoint / own.get("pids", "/").lstrip("/"))
        elif fstype == "cgroup2":
            found.append(mountpoint / own.get("<v2>", "/").lstrip("/"))
    return found


def count_tasks(uid: int) -> int:
    """Tasks (processes and threads) the uid runs now: RLIMIT_NPROC counts all of them."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    total += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return total
