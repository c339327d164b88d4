"""Where llmgine's files live (``Paths``, ``get_paths``) and how the daemon keeps them private:
directories nobody else can put or replace files in (``ensure_private_dir``), files only their
owner may read (``write_private``). A path that is not safe is a ``ConfigError``.

Like settings.py (which re-exports these names), it imports only the standard library and
platformdirs: the CLI uses it without starting the daemon.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "llmgine"


class ConfigError(Exception):
    """Bad configuration; the message is the one line llmgined prints before exiting."""


class StartupError(Exception):
    """The daemon cannot start; the message is the one line printed."""


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    runtime_dir: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "llmgined.sock"

    @property
    def pidfile(self) -> Path:
        return self.runtime_dir / "llmgined.pid"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "llmgined.log"

    @property
    def database(self) -> Path:
        return self.data_dir / "llmgine.db"

    @property
    def local_key(self) -> Path:
        """The key the daemon mints for the local CLI (0600; jupyter's token file)."""
        return self.config_dir / "local.key"


def _fallback_runtime_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"llmgine-{os.getuid()}"


def get_paths(env: Mapping[str, str] | None = None) -> Paths:
    """Where config, data, runtime and state files live.

    ``LLMGINE_HOME`` puts all of them under one folder (tests use it); otherwise the
    platform's conventions (XDG on Linux) apply.
    """
    env = os.environ if env is None else env
    home = env.get("LLMGINE_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(root / "config", root / "data", root / "run", root / "state")
    import warnings

    import platformdirs

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); we fall back below.
        warnings.simplefilter("ignore")
        runtime = Path(platformdirs.user_runtime_dir(APP_NAME))
    # /run/user/<uid> exists only under a login session; without one use a private temp dir.
    if not runtime.parent.is_dir() or not os.access(runtime.parent, os.W_OK):
        runtime = _fallback_runtime_dir()
    return Paths(
        Path(platformdirs.user_config_dir(APP_NAME)),
        Path(platformdirs.user_data_dir(APP_NAME)),
        runtime,
        Path(platformdirs.user_state_dir(APP_NAME)),
    )


def pidfile_owner(path: Path) -> int | None:
    """The pid a pidfile names, if that process is still an llmgined: None for no file, a
    process that is gone, or a pid the system has since given to another program."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None  # no such process
    except OSError:
        return pid  # cannot tell (no /proc): take the file's word
    # The daemon runs as `llmgined` or `python -m llmgine_daemon`; `llmgine event tail` (a CLI
    # process that may have been given the pid since) is not one.
    return pid if b"llmgined" in cmdline or b"llmgine_daemon" in cmdline else None


def hold_pid_lock(path: Path) -> int | None:
    """Take an exclusive ``flock`` on ``path`` (made 0600 if missing) and write our pid in it;
    the descriptor returned holds the lock until it is closed, or the process dies (``kill -9``
    included, so a stale file is simply taken over). None: another process holds it.

    Two processes starting at once cannot both pass (a look at the pid in the file, then a
    write, could). The pidfile and the SQLite database's lock (store/db.py) are taken so."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # Its owner may have removed the file (a daemon stopping removes its pidfile) between
        # our open and our lock: the lock is then on a file no one else will look at; take the
        # one at the path.
        try:
            held, there = os.fstat(fd), os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
            break
        os.close(fd)
    # Written over the old pid, then cut: a reader sees the old pid or ours, never an empty file
    # (the pid is the first word, and the new text ends with a newline).
    data = f"{os.getpid()}\n".encode()
    os.fchmod(fd, 0o600)  # only its owner reads it, whatever made the file and the umask
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    return fd


def ensure_private_dir(path: Path) -> Path:
    """Make sure ``path`` is a directory nobody else can put or replace files in.

    Directories that do not exist yet are created (parents included), each with mode 0700:
    only what the daemon creates is made private. A directory that exists is checked and never
    changed (``--socket /tmp/x.sock`` must not chmod /tmp): ConfigError, one line, when another
    user (other than root) owns it, or when others may write into it and it is not sticky (the
    same goes for the existing directory new ones are created in). A sticky directory such as
    /tmp is fine: others may add files there but not remove or rename ours (and the socket
    itself is 0600, its peers' uid checked).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if missing:
        check_dir_safe(probe)  # what we create there must not be replaceable either
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # created meanwhile by someone else: checked below like any
            continue
        os.chmod(directory, 0o700)  # whatever the umask
    check_dir_safe(path)
    return path


def check_dir_safe(path: Path) -> None:
    """Refuse (ConfigError) a directory others could use to replace our files."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot use the directory: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path}: not a directory")
    if st.st_uid not in (os.getuid(), 0):
        raise ConfigError(f"{path}: directory is owned by uid {st.st_uid}, not by you")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise ConfigError(
            f"{path}: directory is writable by others (mode {mode:04o}) and not sticky; "
            "refusing to use it (choose a private directory, or chmod go-w it yourself)"
        )


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner may read (0600, whatever the umask), atomically: the data
    goes to ``.<name>.XXXXXXXX.tmp`` beside it, which then replaces ``path`` (readers see the
    old file or the new one, never half of one). A missing parent directory is created 0700;
    one others could replace the file in is refused (``ensure_private_dir``).

    Durably, as a database commit: the data is fsynced before the rename and the directory
    after it, so a power loss right after an acknowledged ``secret set`` (or a new local key)
    leaves the new file whole, not an empty one in its place.

    The temporary file is ``flock``ed while it is written, so what a writer killed mid-write
    left (``kill -9``: a copy of the secrets, the key) is told from a write under way and
    removed by the next write of the file (``clear_stale_temps``)."""
    import fcntl
    import tempfile

    # As the daemon's own directories: not one others could replace the file in (the CLI wrote
    # contexts.json and config.toml into any LLMGINE_HOME, another user's included).
    ensure_private_dir(path.parent)
    clear_stale_temps(path)
    payload = data.encode() if isinstance(data, str) else data
    for attempt in range(3):
        # A name of its own (mkstemp: 0600, O_EXCL): two writers at once (two `llmgine config set`)
        # shared `<name>.tmp`, one truncating the file the other was renaming into place, so the
        # file was for a moment empty or half-written and the other's rename failed.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
                try:
                    os.replace(tmp, path)
                except FileNotFoundError:
                    # Another writer's clear_stale_temps took it between mkstemp and flock.
                    if attempt == 2:
                        raise
                    continue
            break
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def clear_stale_temps(path: Path) -> int:
    """Remove the temporary files that ``write_private(path, ...)`` writers killed mid-write
    left beside ``path``; how many. Only files of that naming (``.<name>.`` and mkstemp's eight
    letters, ``.tmp``), regular files of this user, and only when no writer holds their lock
    (one still writing keeps its file): never anybody else's file, nor one under way."""
    import fcntl
    import re

    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    try:
        names = [n for n in os.listdir(path.parent) if pattern.fullmatch(n)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        stale = path.parent / name
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:  # gone already (renamed into place), or a symlink: not ours to touch
            continue
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode) or held.st_uid != os.geteuid():
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a writer is at it
                continue
            now = os.stat(stale, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):  # still that file
                os.unlink(stale)
                removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def dir_locked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` (made 0700 if missing) while the block runs: a
    read-modify-write of a file in it (``llmgine config set``) waits for another one, whose
    change it would otherwise write over. Released when the block ends or the process dies."""
    import fcntl

    ensure_private_dir(directory)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
