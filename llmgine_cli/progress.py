"""Feedback while waiting: a spinner with the elapsed time, a progress bar with counts and a
rate. Both draw on stderr, and only when stderr is a terminal (piped or redirected, nothing is
drawn and nothing is imported beyond this module); the line is cleared when the wait ends, so
what the command prints afterwards starts on a clean line.

    with spinner(env, "running DummyEngineCommand"):
        record = wait()
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from llmgine_cli.context import Environment

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
INTERVAL = 0.1
CLEAR = "\r\x1b[K"


def enabled(env: Environment) -> bool:
    return env.stderr_isatty and env.environ.get("TERM") != "dumb"


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


class Spinner:
    """A line on stderr: a turning frame, a label and the time since it started."""

    def __init__(self, env: Environment, label: str) -> None:
        self.env = env
        self.label = label
        self.started = time.monotonic()
        self._stop: Any = None
        self._thread: Any = None

    def __enter__(self) -> Spinner:
        if enabled(self.env):
            import threading

            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="llmgine-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        drawn = self._thread is not None
        self.stop()
        if drawn and exc[0] is KeyboardInterrupt:  # the ^C echoed on its line is cleared with it
            self.env.ctrl_c_line_cleared = True

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.env.stderr.write(CLEAR)
            self.env.stderr.flush()

    def _run(self) -> None:
        frame = 0
        while not self._stop.wait(INTERVAL if frame else 0.3):  # quick answers never flicker
            text = f"{FRAMES[frame % len(FRAMES)]} {self.label}  {_elapsed(time.monotonic() - self.started)}"
            self.env.stderr.write(CLEAR + text)
            self.env.stderr.flush()
            frame += 1


def spinner(env: Environment, label: str) -> Spinner:
    return Spinner(env, label)


class Bar:
    """``[#####.....] 512/1000  51%  230/s  12.4s`` on stderr, redrawn on ``update``."""

    WIDTH = 30

    def __init__(self, env: Environment, total: int, label: str) -> None:
        self.env = env
        self.total = max(total, 1)
        self.label = label
        self.started = time.monotonic()
        self.on = enabled(env)

    def update(self, done: int) -> None:
        if not self.on:
            return
        elapsed = time.monotonic() - self.started
        filled = int(self.WIDTH * min(done, self.total) / self.total)
        rate = done / elapsed if elapsed > 0 else 0.0
        text = (
            f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} "
            f"{100 * done // self.total}%  {rate:.0f}/s  {_elapsed(elapsed)}"
        )
        self.env.stderr.write(CLEAR + text)
        self.env.stderr.flush()

    def close(self) -> None:
        if self.on:
            self.env.stderr.write(CLEAR)
            self.env.stderr.flush()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
