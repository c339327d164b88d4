"""Starting, finding and stopping llmgined in the background (no Typer, no output here).

Used by `llmgine daemon ...` and by auto-start, so both follow one code path. As with the
Bazel and Gradle clients, the CLI owns the daemon's lifecycle: it spawns the daemon detached
(own session, stdin closed, output appended to the daemon log), waits until /api/health
answers, and remembers the flags it used so `restart` can reuse them.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmgine_daemon.protocol import Health, now_iso
from llmgine_daemon.settings import (
    ConfigError,
    Paths,
    ensure_private_dir,
    get_paths,
    load_settings,
    pidfile_owner,
    write_private,
)

from llmgine_cli.client import (
    ApiError,
    Client,
    DaemonError,
    DaemonTimeout,
    LlmgineError,
    Target,
    TransportError,
    connect_host,
    parse_url,
)
from llmgine_cli.target import default_target

START_TIMEOUT = 10.0
# The daemon's own drain timeout (server.shutdown_timeout, default 10 s) plus slack.
STOP_TIMEOUT = 20.0
ARGS_FILE = "llmgined.args.json"
LOCK_FILE = "llmgined.start.lock"

# Popen objects of daemons started by this process. Keeping them referenced stops Python
# from warning that a (deliberately) still-running child was garbage-collected.
_children: list[subprocess.Popen[bytes]] = []


@dataclass
class DaemonFlags:
    """The llmgined flags `daemon start` passes through (and `restart` reuses)."""

    host: str | None = None
    port: int | None = None
    socket: str | None = None
    no_socket: bool = False
    config: str | None = None
    log_level: str | None = None
    log_file: str | None = None

    def argv(self) -> list[str]:
        args: list[str] = []
        if self.host is not None:
            args += ["--host", self.host]
        if self.port is not None:
            args += ["--port", str(self.port)]
        if self.socket is not None:
            args += ["--socket", self.socket]
        if self.no_socket:
            args.append("--no-socket")
        if self.config is not None:
            args += ["--config", self.config]
        if self.log_level is not None:
            args += ["--log-level", self.log_level]
        if self.log_file is not None:
            args += ["--log-file", self.log_file]
        return args

    def settings_flags(self) -> dict[str, Any]:
        return {
            "server.host": self.host,
            "server.port": self.port,
            "server.socket": self.socket,
            "server.no_socket": True if self.no_socket else None,
            "logging.level": self.log_level,
            "logging.file": self.log_file,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaemonFlags:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Started:
    pid: int | None
    version: str
    url: str
    listeners: list[str]
    log_file: str
    already_running: bool = False


@dataclass
class Stopped:
    pid: int | None
    url: str
    was_running: bool
    signalled: bool = False  # fell back to SIGTERM


@dataclass
class Resolved:
    """Where a daemon started with some flags listens, and the settings behind that."""

    target: Target
    api_key: str | None
    log_file: Path
    extra: dict[str, Any] = field(default_factory=dict)


def resolve(flags: DaemonFlags, env: Mapping[str, str]) -> Resolved:
    """Run the daemon's own settings resolution, so we probe exactly where it will listen."""
    try:
        settings = load_settings(config_file=flags.config, env=env, flags=flags.settings_flags())
    except ConfigError as exc:
        raise DaemonError(f"bad configuration: {exc}") from None
    path = settings.socket_path
    if path is not None:
        target = parse_url(f"unix://{path}")
    elif settings.tcp_enabled:
        target = parse_url(f"http://{connect_host(settings.host)}:{settings.port}").replace(
            local_key_file=str(settings.paths.local_key),
        )
    else:
        raise DaemonError("the daemon would listen nowhere: --no-socket needs --host or --port")
    log = settings["logging.file"]
    return Resolved(
        target, settings["security.api_key_secret"], Path(log).expanduser() if log else settings.paths.daemon_log
    )


# -- pids --------------------------------------------------------------------------------


def read_pid(paths: Paths) -> int | None:
    try:
        text = paths.pidfile.read_text().strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        # Our own child (started in this process): reap it, or it lingers as a zombie that
        # kill(pid, 0) still reports as alive.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # someone else's zombie is dead too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- the args file -----------------------------------------------------------------------


def save_args(paths: Paths, flags: DaemonFlags, pid: int, url: str) -> None:
    record = {"flags": asdict(flags), "argv": flags.argv(), "pid": pid, "url": url, "started_at": now_iso()}
    # Replaced whole (0600): a `daemon start` killed mid-write left it empty, and `daemon
    # restart` then restarted without the flags (`--port` gone).
    write_private(paths.runtime_dir / ARGS_FILE, json.dumps(record))


def load_flags(paths: Paths) -> DaemonFlags | None:
    """The flags of the last `daemon start`, or None if it never ran here."""
    try:
        record = json.loads((paths.runtime_dir / ARGS_FILE).read_text())
        return DaemonFlags.from_dict(record.get("flags", {}))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def managed_flags(env: Mapping[str, str]) -> DaemonFlags:
    return load_flags(get_paths(env)) or DaemonFlags()


# -- probing -----------------------------------------------------------------------------


def probe(target: Target, timeout: float = 1.0) -> Health | None:
    """The daemon's health if it answers at ``target``, else None (health needs no auth)."""
    try:
        return Client(target, timeout=timeout, env={}).health()
    except LlmgineError:
        return None


def _listeners(target: Target, api_key: str | None) -> list[str]:
    try:
        return Client(target, api_key=api_key, timeout=2.0, env={}).status().listeners
    except LlmgineError:
        return [target.url]


def _last_log_line(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


# -- start -------------------------------------------------------------------------------


def start(
    flags: DaemonFlags,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = START_TIMEOUT,
    before: Callable[[], None] | None = None,
) -> Started:
    """Start llmgined (or find it answering); ``before`` runs first under the start lock:
    `daemon restart`'s stop, so that no auto-starting client starts a daemon (with no flags)
    between the stop and this start, which then found it "already running"."""
    env = dict(os.environ if env is None else env)
    resolved = resolve(flags, env)
    target = resolved.target
    paths = get_paths(env)
    try:
        ensure_private_dir(paths.runtime_dir)
        ensure_private_dir(paths.state_dir)
        # Serialise concurrent starters (two auto-starting CLIs): the second one waits, then
        # finds the first one's daemon answering.
        lock_fd = os.open(paths.runtime_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except ConfigError as exc:
        raise DaemonError(str(exc)) from None
    except OSError as exc:  # a read-only or full file system, a directory we may not write
        raise DaemonError(f"cannot start llmgined: {_os_error(exc)}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if before is not None:
            before()
        return _start_locked(flags, env, paths, resolved, target, timeout)
    finally:
        os.close(lock_fd)


def _start_locked(
    flags: DaemonFlags,
    env: dict[str, str],
    paths: Paths,
    resolved: Resolved,
    target: Target,
    timeout: float,
) -> Started:
    health = probe(target)
    if health is None:
        old = pidfile_owner(paths.pidfile)
        if old is not None:
            # A daemon owns this home but does not answer here: another address, or starting
            # (llmgined holds the pidfile from before it listens: a service manager's start).
            other = load_flags(paths)
            if other is not None and other != flags:
                other_target = resolve(other, env).target
                if probe(other_target) is not None:
                    raise DaemonError(
                        f"llmgined is already running (pid {old}) at {other_target.url}; "
                        f"use --url {other_target.url}, or `llmgine daemon restart` to change flags"
                    )
            health = _answer_of_starting(target, old, timeout)
            if health is None and pid_alive(old):  # gone meanwhile (its start failed): ours then
                raise DaemonError(f"llmgined (pid {old}) is running but does not answer at {target.url}")
    if health is not None:
        return Started(
            read_pid(paths),
            health.version,
            target.url,
            _listeners(target, resolved.api_key),
            str(resolved.log_file),
            already_running=True,
        )
    paths.pidfile.unlink(missing_ok=True)  # stale, if there is one: its process is gone

    log = paths.daemon_log
    try:
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise DaemonError(f"cannot start llmgined: {_os_error(exc)}") from None
    offset = os.fstat(log_fd).st_size
    cmd = [sys.executable, "-m", "llmgine_daemon", *flags.argv()]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            env=env,
            start_new_session=True,  # survives the terminal (and our Ctrl-C)
            close_fds=True,
        )
    except OSError as exc:
        raise DaemonError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    finally:
        os.close(log_fd)
    _children.append(proc)

    deadline = time.monotonic() + timeout
    try:
        while True:
            health = probe(target, timeout=0.5)
            if health is not None:
                break
            code = proc.poll()
            if code is not None:
                # Lost a race to another daemon that is now answering? Then that is fine.
                health = probe(target)
                if health is not None:
                    break
                line = _last_log_line(log, offset) or _no_output(log)
                raise DaemonError(f"llmgined exited with status {code}: {line} (log: {log})")
            if time.monotonic() > deadline:
                _terminate(proc)
                raise DaemonTimeout(
                    f"llmgined did not answer at {target.url} within {timeout:g}s; stopped it (log: {log})"
                )
            time.sleep(0.05)
    except KeyboardInterrupt:
        # Ctrl-C while it starts: stopped as when it does not answer in time. Left running, it
        # went on starting in its own session, with no record of its flags for `daemon restart`.
        _terminate(proc)
        raise

    save_args(paths, flags, proc.pid, target.url)
    return Started(proc.pid, health.version, target.url, _listeners(target, resolved.api_key), str(resolved.log_file))


def _answer_of_starting(target: Target, pid: int, timeout: float) -> Health | None:
    """The health of the daemon ``pid`` at ``target`` once it answers, waiting while it lives,
    up to ``timeout``; None if it does not."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        health = probe(target, timeout=0.5)
        if health is not None:
            return health
        time.sleep(0.1)
    return None


def _no_output(log: Path) -> str:
    """Why the daemon's log holds nothing of its failed start: its reason could not be written
    there when that file system is full (the reason is likely the same: its database is there)."""
    try:
        fs = os.statvfs(log)
    except OSError:
        return "no output"
    if fs.f_bavail == 0:
        return (
            f"nothing in its log: the file system of {log.parent} is full "
            "(so its reason could not be written either); make room and start it again"
        )
    return "no output"


def _os_error(exc: OSError) -> str:
    """``path: reason`` (``[Errno 30] Read-only file system: 'path'`` said plainly)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- stop --------------------------------------------------------------------------------


def stop(
    target: Target,
    env: Mapping[str, str] | None = None,
    *,
    api_key: str | None = None,
    timeout: float = STOP_TIMEOUT,
) -> Stopped:
    """Ask the daemon to shut down (SIGTERM via the pidfile if it won't answer) and wait."""
    env = os.environ if env is None else env
    # The pidfile's daemon, if it still runs and the target is its address: whom to signal
    # should the target not answer. A target elsewhere (another --socket, a --url) is never
    # answered with a signal to the pidfile's daemon.
    pid = pidfile_owner(get_paths(env).pidfile) if _at_default_socket(target, env) else None
    client = Client(target, api_key=api_key, timeout=5.0, env=env)
    signalled = False
    try:
        # The daemon that answers at the target says which process it is: the one to wait for
        # (the pidfile may name another daemon of this user's, on another socket).
        pid = client.status().pid
        client.shutdown()
    except (TransportError, ApiError) as exc:
        if pid is None:
            if isinstance(exc, ApiError):
                raise
            return Stopped(None, target.url, was_running=False)
        # Not answering (or refusing us): the pidfile is ours, so signal it.
        try:
            os.kill(pid, signal.SIGTERM)
            # A daemon stopped (SIGSTOP, Ctrl-Z, a debugger's pause) does not answer and would
            # hold the SIGTERM until someone continues it: continue it, as systemd's stop does.
            os.kill(pid, signal.SIGCONT)
            signalled = True
        except ProcessLookupError:  # it was alive a moment ago: it just finished exiting
            return Stopped(pid, target.url, was_running=True)
        except PermissionError as perr:
            raise DaemonError(f"cannot signal llmgined (pid {pid}): {perr.strerror}") from None

    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise DaemonTimeout(f"llmgined (pid {pid}) is still running after {timeout:g}s (kill it with: kill {pid})")
        time.sleep(0.05)
    return Stopped(pid, target.url, was_running=True, signalled=signalled)


def paused_pid(target: Target, env: Mapping[str, str]) -> int | None:
    """The pid of this home's daemon at ``target`` if it is stopped (SIGSTOP, Ctrl-Z, a
    debugger), which is why it does not answer; else None."""
    pid = pidfile_owner(get_paths(env).pidfile) if _at_default_socket(target, env) else None
    if pid is None:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return pid if state in ("T", "t") else None


def _at_default_socket(target: Target, env: Mapping[str, str]) -> bool:
    """Whether ``target`` is this home's daemon, the one the pidfile names (llmgined writes it
    only when it listens where this home's settings say, not on a ``--socket`` of its own):
    the default target, or its socket given by --url."""
    if target.is_default:
        return True
    home = default_target(env).socket_path
    return (
        target.socket_path is not None
        and home is not None
        and os.path.realpath(target.socket_path) == os.path.realpath(home)
    )


# -- logs --------------------------------------------------------------------------------


def log_file(env: Mapping[str, str] | None = None) -> Path:
    """LOG_FILE if configured, else the file `daemon start` sends the daemon's output to."""
    env = os.environ if env is None else env
    flags = managed_flags(env)
    try:
        return resolve(flags, env).log_file
    except DaemonError:
        return get_paths(env).daemon_log


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file without reading all of a big one."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        size = min(end, 8192)
        while True:
            fh.seek(end - size)
            chunk = fh.read(size)
            if chunk.count(b"\n") > lines or size == end:
                break
            size = min(end, size * 4)
    text = chunk.decode("utf-8", "replace")
    return text.splitlines()[-lines:] if lines > 0 else []
