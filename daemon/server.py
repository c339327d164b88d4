"""``llmgined``: parse flags into Settings, then serve until asked to stop.

Like uvicorn's main → config → server: this module only turns the command line into Settings,
checks that the daemon can start at all (configuration, socket, port, database), serves, and
cleans up. Any start-up failure is one line on stderr and a non-zero exit, with nothing left
half-started (no socket, no pidfile).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import logging.handlers
import os
import resource
import shutil
import signal
import socket
import stat
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from llmgine_daemon import __version__
from llmgine_daemon.api import fastlane
from llmgine_daemon.api.keys import FATAL, LISTENERS, SETTINGS, SHUTDOWN
from llmgine_daemon.api.limits import runner_kwargs
from llmgine_daemon.api.malformed import EnvelopingSite, enveloping
from llmgine_daemon.api.origins import check_bind
from llmgine_daemon.app import create_app, drain_commands
from llmgine_daemon.argv import without_options
from llmgine_daemon.coalesce import CoalescingSite
from llmgine_daemon.logsetup import setup_logging
from llmgine_daemon.paths import StartupError, hold_pid_lock
from llmgine_daemon.settings import (
    ConfigError,
    Settings,
    check_config_file_mode,
    describe,
    ensure_private_dir,
    load_settings,
    pidfile_owner,
    read_env_file,
    redact_url,
)
from llmgine_daemon.store.db import StorageError

log = logging.getLogger("llmgine.server")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the NUL


def build_parser() -> argparse.ArgumentParser:
    width = shutil.get_terminal_size().columns - 2  # argparse's, for the options: the rest kept
    parser = argparse.ArgumentParser(
        prog="llmgined",
        description=textwrap.fill(
            "The llmgine daemon: the LLMGine message bus behind an HTTP + WebSocket API. "
            "Runs in the foreground; `llmgine daemon start` runs it in the background.",
            width,
        ),
        epilog=textwrap.fill(
            "Settings (config file key, environment variable, meaning); precedence: "
            "defaults < config file < environment < flags:",
            width,
        )
        + "\n"
        + describe(width),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen on TCP at this address (default 127.0.0.1 when --port is given)")
    parser.add_argument("--port", help="listen on TCP at this port (default 8000 when --host is given)")
    parser.add_argument("--socket", help="Unix socket path (default: in the runtime directory)")
    parser.add_argument("--no-socket", action="store_true", default=None, help="do not listen on a Unix socket")
    parser.add_argument(
        "--config", help="config file, TOML or (.yaml/.yml) YAML (default: config.toml in the config directory)"
    )
    parser.add_argument(
        "--env-file",
        help="read environment variables (NAME=value lines, as in a .env file) from this file; "
        "variables already in the environment win",
    )
    parser.add_argument("--log-level", help="debug, info, warning, error or critical")
    parser.add_argument("--log-file", help="write logs to this file instead of stderr")
    parser.add_argument(
        "--database-url",
        help="sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST:PORT/DB (default: SQLite in the data directory;"
        " a password given here is taken off the command line at start, where ps would show it)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the daemon whenever a *.py file of its source changes (as uvicorn's --reload)",
    )
    parser.add_argument(
        "--reload-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="with --reload: watch this directory instead of the daemon's package (repeatable)",
    )
    parser.add_argument("--version", action="version", version=f"llmgined {__version__}")
    return parser


# The settings a flag sets (the README's configuration table is generated from these too).
FLAGS = {
    "server.host": "--host",
    "server.port": "--port",
    "server.socket": "--socket",
    "server.no_socket": "--no-socket",
    "logging.level": "--log-level",
    "logging.file": "--log-file",
    "database.url": "--database-url",
}


def settings_from_args(args: argparse.Namespace, *, socket_flags: bool = True) -> Settings:
    """The settings: flags over the environment over the config file. Without
    ``socket_flags``, where this home's daemon listens (``--socket``/``--no-socket`` left out)."""
    flags = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in FLAGS.items()}
    if not socket_flags:
        flags = {k: v for k, v in flags.items() if k not in ("server.socket", "server.no_socket")}
    env: Mapping[str, str] = os.environ
    if args.env_file is not None:
        # As uvicorn's --env-file (python-dotenv): the file fills in, the real environment wins.
        env = {**read_env_file(args.env_file), **os.environ}
    return load_settings(args.config, env=env, flags=flags)


def check_security_settings(settings: Settings) -> None:
    check_config_file_mode(settings.config_file)


def check_socket_dir(path: Path) -> None:
    """The socket path is short enough and its directory private (made if missing)."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise StartupError(
            f"server.socket {str(path)!r}: path is longer than {MAX_UNIX_PATH} bytes; "
            "use a shorter LLMGINE_HOME or --socket"
        )
    try:
        ensure_private_dir(path.parent)
    except OSError as exc:
        raise StartupError(f"server.socket {str(path)!r}: cannot create its directory: {exc.strerror}") from None
    except ConfigError as exc:
        raise StartupError(f"server.socket {str(path)!r}: {exc}") from None


def remove_stale_socket(path: Path) -> None:
    """Nothing at ``path``, or a socket of ours nobody listens on (removed); else StartupError.
    At the home's socket, only with the home's pidfile held (``claim_home``): a daemon of the
    home between its bind and its listen looks just like a stale socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    # Only ever remove a stale socket of our own, never a file someone pointed --socket at
    # (nor another user's socket in a shared directory such as /tmp).
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"server.socket {str(path)!r}: exists and is not a socket; refusing to replace it")
    if st.st_uid != os.getuid():
        raise StartupError(f"server.socket {str(path)!r}: the socket there belongs to uid {st.st_uid}")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        _remove(path)  # stale socket from a daemon that died
    else:
        raise StartupError(f"server.socket {str(path)!r}: another llmgined is already listening there")
    finally:
        probe.close()


def _claim_pidfile(path: Path, settings: Settings, home_socket: Path | None) -> int | None:
    """Take the home's pidfile and write our pid in it, unless this daemon listens on a socket
    of its own (``--socket`` other than ``home_socket``, where the home's config and environment
    put it) or another llmgined that still runs owns the file: the pidfile names the daemon at
    the home's default socket, which `llmgine daemon stop` signals when it does not answer there
    (a daemon on another socket is found by asking it; it is never signalled in another's place).

    Ownership is an exclusive ``flock`` on the file, held for the daemon's life on the
    descriptor returned (``_release_pidfile`` ends it): two daemons starting at once cannot
    both pass the check (a look at the pid in the file, then a write, could), and the lock of
    a daemon that died went with it, so a stale file is simply taken over. None: not ours."""
    if settings.socket_path is not None and settings.socket_path != home_socket:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = hold_pid_lock(path)
    if fd is None:
        log.warning(
            "%s belongs to llmgined pid %s, still running: this daemon writes no pidfile", path, pidfile_owner(path)
        )
    return fd


def claim_home(settings: Settings, home_socket: Path | None) -> int | None:
    """The home's pidfile, held from before the home's socket is looked at until the daemon
    has gone: two daemons of one home started at once with a stale socket there both took it
    for stale, and the second removed the first one's new socket (which then ran unreachable,
    and the second's exit removed its own). StartupError when another process holds it. None:
    this daemon does not listen at the home's socket (``_claim_pidfile`` decides later)."""
    path = settings.paths.pidfile
    if settings.socket_path is None or settings.socket_path != home_socket:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the socket may be elsewhere
        fd = hold_pid_lock(path)
    except OSError as exc:  # a read-only or full file system
        raise StartupError(
            f"server.socket {str(settings.socket_path)!r}: cannot write {path}: {exc.strerror}"
        ) from None
    if fd is None:
        owner = pidfile_owner(path)
        who = f"llmgined (pid {owner})" if owner is not None else "llmgined"
        raise StartupError(
            f"server.socket {str(settings.socket_path)!r}: another {who} is already listening there, "
            f"or starting (it holds {path})"
        )
    return fd


def _release_pidfile(path: Path, fd: int | None) -> None:
    """Remove our pidfile, then let go of its lock (in that order: see ``_claim_pidfile``)."""
    if fd is None:
        return
    _remove(path)
    os.close(fd)


def _remove(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def bind_sockets(settings: Settings) -> tuple[list[socket.socket], list[str]]:
    """Bind every listener before anything else starts, so a busy port fails fast and clean."""
    sockets: list[socket.socket] = []
    listeners: list[str] = []
    try:
        path = settings.socket_path
        if path is not None:
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(unix)
            try:
                unix.bind(str(path))
            except OSError as exc:
                sockets.remove(unix)  # nothing of ours to remove at that path
                unix.close()
                raise StartupError(f"server.socket {str(path)!r}: cannot listen: {exc.strerror}") from None
            os.chmod(path, 0o600)
            listeners.append(f"unix://{path}")
        if settings.tcp_enabled:
            host, port = settings.host, settings.port
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tcp = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(tcp)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, port))
            except OSError as exc:
                reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise StartupError(f"server.port {port} on {host!r}: cannot listen: {reason}") from None
            bound = tcp.getsockname()[1]
            listeners.append(f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}")
        if not sockets:
            raise StartupError("nothing to listen on: --no-socket needs --host/--port")
        for sock in sockets:
            sock.listen(1024)
            sock.setblocking(False)
        return sockets, listeners
    except BaseException:
        for sock in sockets:
            sock.close()
        if settings.socket_path is not None and sockets:
            _remove(settings.socket_path)
        raise


class TcpSite(CoalescingSite):
    """The TCP listeners: writes held to the end of the turn (coalesce.py), plain event
    publishes and command submissions answered by the fast lane (api/fastlane.py), and requests
    the parser refuses answered with the envelope (api/malformed.py), as on the Unix socket."""

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        factory = enveloping(super().protocol_factory())
        app = self._runner.app
        on = app is not None and app[SETTINGS]["server.fast_lane"]
        return fastlane.fast_laned(factory, app) if on else factory


@dataclass
class Claim:
    """The descriptor holding the home's pidfile (its flock), or None: not ours. Replaced when
    the file is removed under the daemon and made again (``keep_files``)."""

    fd: int | None = None


KEEP_FILES_S = 1.0  # how often the daemon looks for its socket and pidfile (two stat calls)


async def keep_files(runner: web.AppRunner, settings: Settings, claim: Claim, sockets: list[socket.socket]) -> None:
    """Put back the socket and the pidfile if they are removed under the running daemon: a
    temp-file cleaner (systemd-tmpfiles empties /tmp of files unused for 10 days, where the
    runtime directory is without XDG_RUNTIME_DIR) or a person. The daemon ran on unreachable:
    `daemon status` and `daemon stop` said it was not running, and an auto-start failed on its
    database lock. Only a path where nothing is now is used: a file put there is left alone."""
    path, pidfile = settings.socket_path, settings.paths.pidfile
    failed = ""
    while True:
        await asyncio.sleep(KEEP_FILES_S)
        try:
            if path is not None and not os.path.lexists(path):
                ensure_private_dir(path.parent)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(str(path))
                    os.chmod(path, 0o600)
                    sock.listen(1024)
                    sock.setblocking(False)
                except BaseException:
                    sock.close()
                    raise
                sockets.append(sock)  # closed at exit, as the others
                await EnvelopingSite(runner, sock).start()
                log.warning("%s had been removed (a temp-file cleaner?): listening there again", path)
            if claim.fd is not None and not os.path.lexists(pidfile):
                fd = hold_pid_lock(pidfile)
                if fd is not None:
                    old, claim.fd = claim.fd, fd
                    os.close(old)
                    log.warning("%s had been removed: written again", pidfile)
            failed = ""
        except (OSError, ConfigError) as exc:
            if str(exc) != failed:  # one line per reason, not one a second
                failed = str(exc)
                log.warning("cannot put back the socket or pidfile: %s", exc)


async def serve(settings: Settings, home_socket: Path | None, claim: Claim | None = None) -> None:
    """Serve until stopped. ``claim``: the home's pidfile, when ``claim_home`` took it (its
    caller releases it); else this daemon claims the pidfile once it listens."""
    sockets, listeners = bind_sockets(settings)
    socket_path = settings.socket_path
    pidfile = settings.paths.pidfile
    pidfile_fd: int | None = None
    keeper: asyncio.Task[None] | None = None
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=float(settings["server.shutdown_timeout"]),
        **runner_kwargs(settings),
    )
    try:
        try:
            await runner.setup()
        except StorageError as exc:
            raise StartupError(f"database.url: {exc}") from None
        for sock in sockets:
            # TCP: answers written at the end of the loop's turn (daemon/coalesce.py says why,
            # and why not on the Unix socket).
            site = EnvelopingSite if sock.family == socket.AF_UNIX else TcpSite
            await site(runner, sock).start()
        app[LISTENERS].extend(listeners)
        if claim is None or claim.fd is None:
            pidfile_fd = _claim_pidfile(pidfile, settings, home_socket)
            claim = Claim(pidfile_fd)
        keeper = asyncio.create_task(keep_files(runner, settings, claim, sockets), name="llmgined-keep-files")
        tune_gc()

        stop = app[SHUTDOWN]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("llmgined %s (pid %d) listening on %s", __version__, os.getpid(), ", ".join(listeners))
        await stop.wait()
        log.info("shutting down")
        await drain_commands(app)  # queued commands stay queued, from the signal on
        await drain(runner, min(DRAIN_S, float(settings["server.shutdown_timeout"])))
        await fastlane.finish(float(settings["server.shutdown_timeout"]))  # as aiohttp's cleanup does its own
    finally:
        if keeper is not None:  # before the socket and pidfile go: never made again on the way out
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        await runner.cleanup()
        for sock in sockets:
            sock.close()
        if socket_path is not None:
            _remove(socket_path)
        if pidfile_fd is not None and claim is not None:  # ours (keep_files may have replaced it)
            _release_pidfile(pidfile, claim.fd)
    log.info("stopped")
    if app[FATAL]:
        raise Stopped(app[FATAL][0])


# Once stopping, connections may finish what their clients sent for this long at most (drain).
DRAIN_S = 1.0
DRAIN_QUIET_S = 0.05


def _working(conn: Any) -> bool:
    """Is the connection handling a request whose answer it has not begun to send (a stream
    that has begun is left to the stop: it may go on for ever), or holding one to handle?"""
    if id(conn) in fastlane.IN_FLIGHT:  # a request the fast lane is answering
        return True
    request = getattr(conn, "_current_request", None)
    started = request is not None and getattr(request.writer, "output_size", 0) > 0
    return bool(getattr(conn, "_messages", None)) or (getattr(conn, "_request_in_progress", False) and not started)


async def drain(runner: web.AppRunner, most: float) -> None:
    """Let the connections answer what their clients sent before they could know of the stop.
    aiohttp's stop closes every connection at once and drops, unanswered, what a client sent
    after that: neither done nor refused (a closed loop of 32 clients lost one request on each
    connection at every stop). So first the listeners close, and every answer from then on
    says ``Connection: close`` (api/edge.py), after which its client sends nothing more there;
    once no connection has worked on a request for DRAIN_QUIET_S (or after ``most`` seconds),
    aiohttp's stop closes what is left: idle keep-alive connections and streams."""
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    loop = asyncio.get_running_loop()
    deadline, quiet = loop.time() + most, loop.time()
    while server is not None and loop.time() < deadline:
        if any(_working(conn) for conn in server.connections):
            quiet = loop.time()
        elif loop.time() - quiet >= DRAIN_QUIET_S:
            return
        await asyncio.sleep(0.01)


class Stopped(Exception):
    """The daemon stopped by itself, for a reason it must say (exit 1)."""


# The cyclic garbage collector, by default, runs every 700 net allocations and walks every live
# object of the older generations now and then: under load (a batch of 10,000 commands holds
# ~100,000 objects alive for its length) that was 10-15% of the daemon's CPU (bench/README.md).
# Nearly everything the daemon allocates per request is freed by reference counting, so it
# collects far less often, and what start-up made (modules, the app) is never walked again.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Where the soft limit on open files goes when the hard one is unlimited.
OPEN_FILES_UNLIMITED = 1 << 20


def raise_open_files_limit() -> None:
    """Take the hard limit on open files as the soft one (Go's runtime does the same). Every
    connection, stream and held request (a command wait: up to 300 s) is a descriptor: with
    the usual soft limit of 1024, one session token's thousand waits (its rate limit's burst)
    left none, and accept() failed for everyone, the owner on the Unix socket included."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # a system that caps it lower (nr_open): keep what we have
        pass


def hide_database_password(url: str | None) -> None:
    """A password given with ``--database-url`` is on the command line, which ``ps`` shows
    every user for the daemon's life: move the URL into the environment (``DATABASE_URL``:
    the flag's value wins over it anyway, and the environment is readable by this user only)
    and run this process again without the flag (the same pid: a supervisor sees nothing)."""
    if not url or redact_url(url) == url:
        return
    given = sys.argv[1:]
    # argparse's abbreviations too, down to ``--d``: no other option starts with it.
    kept = without_options(given, lambda name: len(name) > 2 and "--database-url".startswith(name))
    if kept == given:  # not found: run as it is, rather than again and again
        return
    interpreter = sys.orig_argv[: len(sys.orig_argv) - len(given)]
    os.environ["DATABASE_URL"] = url
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*interpreter, *kept])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:
        hide_database_password(args.database_url)
    os.umask(0o077)
    raise_open_files_limit()
    try:
        settings = settings_from_args(args)
        if args.reload_dir and not args.reload:
            raise ConfigError("--reload-dir is an option of --reload")
        for directory in args.reload_dir:
            if not Path(directory).is_dir():
                raise ConfigError(f"--reload-dir {directory!r}: not a directory")
        if args.reload:
            from llmgine_daemon.reload import supervise

            return supervise(sys.argv[1:] if argv is None else argv, [Path(d) for d in args.reload_dir])
        check_security_settings(settings)
        setup_logging(settings)
        if settings.postgres_url is None and not settings.database_path.exists():
            # A database not made yet holds no keys: refuse before making it (the check with
            # the keys of the backend in use comes once they are loaded: app.py).
            check_bind(settings, lambda: False)
        try:
            ensure_private_dir(settings.database_path.parent)
        except OSError as exc:
            raise StartupError(
                f"database.url: cannot create {str(settings.database_path.parent)!r}: {exc.strerror}"
            ) from None
        except ConfigError as exc:
            raise StartupError(f"database.url: {exc}") from None
        # Where this home's daemon listens: ours, unless a socket flag put it elsewhere.
        socket_flag = args.socket is not None or args.no_socket is not None
        home_socket = settings_from_args(args, socket_flags=False).socket_path if socket_flag else settings.socket_path
        if settings.socket_path is not None:
            check_socket_dir(settings.socket_path)
        claim = Claim(claim_home(settings, home_socket))
        try:
            if settings.socket_path is not None:
                remove_stale_socket(settings.socket_path)
            asyncio.run(serve(settings, home_socket, claim))
        finally:
            _release_pidfile(settings.paths.pidfile, claim.fd)
    except ConfigError as exc:
        print(f"llmgined: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"llmgined: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Stopped as exc:
        print(f"llmgined: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
