"""What a command gets from outside: streams, TTY-ness, environment, global options.

Passing these in (instead of reading sys.stdout/os.environ all over) keeps output testable:
a test builds an Environment around StringIO objects, like httpie's context.py.
"""

from __future__ import annotations

import os
import sys

from llmgine_cli.errors import InvalidArgument
from llmgine_cli.target import Target, resolve_target
from llmgine_cli.transport import DEFAULT_TIMEOUT

# Plain classes and no typing at run time: this module is on every call's path (hot.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

    from llmgine_cli.client import Client
    from llmgine_cli.errors import DaemonUnreachable


class Environment:
    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        stdout_isatty: bool,
        stderr_isatty: bool,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_isatty = stdout_isatty
        self.stderr_isatty = stderr_isatty
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        # A spinner ended by Ctrl-C cleared its line, the echoed ^C with it (progress.py).
        self.ctrl_c_line_cleared = False

    def __repr__(self) -> str:
        return f"Environment(stdout_isatty={self.stdout_isatty}, stderr_isatty={self.stderr_isatty})"

    @classmethod
    def from_sys(cls) -> Environment:
        # Read sys.* at call time: CliRunner swaps the streams per invocation.
        return cls(sys.stdout, sys.stderr, _isatty(sys.stdout), _isatty(sys.stderr), os.environ)

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    @property
    def redraws(self) -> bool:
        """Whether stdout is a terminal that can move its cursor: a live view (top, metrics
        --watch, event tail) draws there. On TERM=dumb rich's live display draws nothing until
        it stops (top: not even then), so those print a frame (an event) per line instead."""
        return self.stdout_isatty and self.environ.get("TERM") not in ("dumb", "unknown")

    def interrupted(self, message: str) -> None:
        """After Ctrl-C in a command that leaves work going on in the daemon: end the ``^C`` line
        (unless a spinner did) and say what goes on (``message``, made safe for the terminal)."""
        from llmgine_cli.render import visible_line  # (rich: only where it is needed)

        if not self.ctrl_c_line_cleared:
            self.after_ctrl_c()
        self.err(visible_line(message))

    def after_ctrl_c(self) -> None:
        """End the line the terminal echoed ``^C`` on, as a shell does after a program killed by
        SIGINT: a follower or a wait exits 130 by itself, and the prompt, or the `interrupted:`
        line, came right after the ``^C``. Only where nothing (a spinner, a live view) redraws
        that line."""
        if self.stderr_isatty:
            self.err("")

    def reader_gone(self, timeout: float | None = 0) -> bool:
        """Whether stdout is a pipe (or socket) whose reader has gone: `... | head -1` exited.

        A command that follows something (`event tail`, `logs -f`) may print nothing for
        minutes, so it would learn that only at its next write; as `tail -f` does, it asks
        instead. ``timeout``: seconds to wait for it (None: until it happens). False for a
        terminal, a file, or a stream without a descriptor (tests' StringIO).
        """
        import select
        import stat

        try:
            fd = self.stdout.fileno()
            mode = os.fstat(fd).st_mode
        except (AttributeError, OSError, ValueError):
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # no events asked for: POLLERR and POLLHUP are always reported
        wait = None if timeout is None else int(timeout * 1000)
        return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(wait))

    def check_reader(self) -> None:
        """Raise BrokenPipeError, as a write would, if stdout's reader has gone (reader_gone)."""
        if self.reader_gone():
            raise reader_gone_error()

    def on_reader_gone(self, callback: Any) -> None:
        """Call ``callback`` (from a thread) once stdout's reader has gone (reader_gone)."""
        import threading

        def watch() -> None:
            if self.reader_gone(None):
                callback()

        if not self.stdout_isatty:
            threading.Thread(target=watch, name="stdout-reader", daemon=True).start()


def reader_gone_error() -> BrokenPipeError:
    """What a write to a pipe nobody reads raises: reported as one (exit 1, no message)."""
    import errno

    return BrokenPipeError(errno.EPIPE, "the reader of stdout has gone")


def _json_escape(exc: UnicodeError) -> tuple[str, int]:
    """A codec error handler: what the output's encoding cannot write, as JSON's \\uXXXX
    escapes (a surrogate pair above U+FFFF), so it stays readable and JSON stays JSON."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start : exc.end]:
        code = ord(ch)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out), exc.end


def clicolor() -> None:
    """gh's colour switches, for rich (which reads only NO_COLOR and FORCE_COLOR):
    CLICOLOR_FORCE other than 0 colours output that is not a terminal (`| less -R`), and
    CLICOLOR=0 turns colour off. NO_COLOR and FORCE_COLOR, when set, still decide."""
    env = os.environ
    if "NO_COLOR" in env or "FORCE_COLOR" in env:
        return
    if env.get("CLICOLOR_FORCE", "0") not in ("", "0"):
        env["FORCE_COLOR"] = "1"
    elif env.get("CLICOLOR") == "0":
        env["NO_COLOR"] = "1"


def open_closed_std_streams() -> None:
    """A standard stream the caller closed (`<&-` in cron or a CI step, `>&-`) is /dev/null:
    Python leaves it None, and every read, isatty() or write on it was an internal error
    (AttributeError). Closed stdin reads as empty, as `< /dev/null` does; and a file the
    command opens later cannot land on descriptor 0, 1 or 2 and be written to by mistake."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def escape_unencodable_output() -> None:
    """stdout and stderr in a locale that is not UTF-8 (LANG=en_US.ISO-8859-1, or
    PYTHONIOENCODING=ascii): a character the encoding lacks is written as a JSON escape instead
    of failing the command (a session named in Japanese made `session list`, even `-o json`,
    an internal error: UnicodeEncodeError)."""
    import codecs

    codecs.register_error("llmgine-json-escape", _json_escape)
    for stream in (sys.stdout, sys.stderr):
        encoding = codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name
        if encoding != "utf-8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="llmgine-json-escape")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class AppContext:
    """The root callback's result, stored in ``ctx.obj`` for every command."""

    def __init__(
        self,
        env: Environment,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.env = env
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        # The session LLMGINE_SESSION gave (as set, then its id), not -S: an error about it says so.
        self.session_from_env: list[str] | None = None

    def request_timeout(self) -> float:
        if self.timeout is not None:
            return self.timeout
        text = self.env.environ.get("LLMGINE_TIMEOUT", "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0.01 <= seconds < float("inf"):  # NaN too; as --timeout (x>=0.01)
            raise InvalidArgument(f"LLMGINE_TIMEOUT={text!r}: give the seconds to wait for an answer (at least 0.01)")
        return seconds

    def target(self) -> Target:
        return resolve_target(self.url, self.env.environ)

    @property
    def autostart_enabled(self) -> bool:
        return self.env.environ.get("LLMGINE_NO_AUTOSTART", "").strip().lower() not in (
            "1",
            "true",
            "yes",
            "on",
        )

    def client(
        self,
        *,
        autostart: bool = True,
        target: Target | None = None,
        timeout: float | None = None,
        cls: Any = None,
    ) -> Client:
        """A client for this invocation.

        ``autostart`` is for commands that need a daemon to do their job (sessions, ...);
        probes and daemon management (health, status, shutdown, daemon ...) pass False,
        because starting a daemon just to ask whether it runs, or to stop it, is absurd.
        ``cls``: the class to build (default Client; the fast path passes the bare
        HTTPTransport, which does not import the protocol models).
        """
        if cls is None:
            from llmgine_cli.client import Client as cls
        target = target or self.target()
        hook = self._autostart if autostart and target.is_default and self.autostart_enabled else None
        return cls(
            target,
            api_key=self.api_key,
            env=self.env.environ,
            timeout=timeout if timeout is not None else self.request_timeout(),
            on_unreachable=hook,
            on_version_mismatch=self._version_mismatch,
        )

    def _autostart(self, exc: DaemonUnreachable) -> None:
        from llmgine_cli import daemonctl

        self.env.err(f"llmgine: no daemon at {exc.url}; starting llmgined ...")
        started = daemonctl.start(daemonctl.DaemonFlags(), self.env.environ)
        self.env.err(
            f"llmgine: llmgined {started.version} started (pid {started.pid}), "
            f"listening on {', '.join(started.listeners)}"
        )

    def _version_mismatch(self, daemon_version: str) -> None:
        from llmgine_daemon import __version__

        self.env.err(
            f"warning: llmgine {__version__} is talking to llmgined {daemon_version}; "
            "restart the daemon (llmgine daemon restart) to match"
        )
