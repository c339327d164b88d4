"""Views that keep drawing while something happens: the live `event tail`, and an answer being
streamed by `ask`/`chat` (plain when piped, rich on a terminal). Loaded only by those commands;
rich is imported inside the functions that draw, as in ``render.py``."""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator
from typing import Any

import msgspec
from llmgine_daemon.protocol.streams import Frame, Hello

from llmgine_cli.context import Environment
from llmgine_cli.ids import short_id
from llmgine_cli.render import short_time, visible_line, visible_text

_TYPE_STYLES = (
    "cyan",
    "green",
    "magenta",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_green",
    "bright_magenta",
    "bright_blue",
    "bright_yellow",
)


def _compact(data: Any, width: int = 100) -> str:
    # JSON escapes C0 controls but not C1 (an 8-bit CSI) nor U+2028: render.py's escapes.
    text = visible_line(msgspec.json.encode(data).decode()) if data else ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _type(event: Any) -> str:
    """The event's type as a terminal may show it: user code may publish any text as a type,
    terminal escapes included."""
    return visible_line(event.event_type)


def event_line(event: Any) -> str:
    """One event as a plain line: seq, time, session, type, compact data."""
    session = short_id(event.session_id)
    return f"{event.seq}  {short_time(event.timestamp)}  {session}  {_type(event)}  {_compact(event.data)}".rstrip()


def _type_style(event_type: str) -> str:
    """A colour per event type (stable), so a burst of one kind stands out."""
    return _TYPE_STYLES[sum(event_type.encode()) % len(_TYPE_STYLES)]


TYPE_MAX = 32  # columns an event type takes in a row at most (with "…")


def event_text(event: Any, width: int) -> Any:
    """One event as a terminal shows it (`event tail`, `command run --follow`): time, seq,
    session, type in its colour, then the data cut to what is left of ``width``. Print it
    with no_wrap, overflow="ellipsis", crop: one line per event, whatever the width."""
    from rich.text import Text

    line = Text()
    line.append(f"{short_time(event.timestamp)[11:]} ", style="dim")
    wide = width >= 80  # seqs and types line up in columns; narrower, the data gets that room
    line.append(f"#{event.seq:<{6 if wide else 0}} ", style="dim")
    line.append(f"{short_id(event.session_id)} ", style="bold")
    kind = _type(event)
    if wide and len(kind) > TYPE_MAX:  # a longer one took the row, and the data was not shown
        kind = kind[: TYPE_MAX - 1] + "…"
    line.append(f"{kind:<{24 if wide else 0}} ", style=_type_style(event.event_type))
    line.append(_compact(event.data, max(width - line.cell_len, 1)))
    return line


class LiveTail:
    """The terminal view of `event tail`: events scroll by, a footer keeps counters and state.

    Colour follows the event type (stable per type), so a burst of one kind stands out.
    """

    def __init__(self, env: Environment, title: str) -> None:
        from rich.console import Console

        self.console = Console(file=env.stdout, force_terminal=True, highlight=False)
        self.title = short_id(title)  # a session as the rows show it
        self.total = 0
        self.by_type: dict[str, int] = {}
        self.state = "connecting"
        self.last_seq: int | None = None
        self.started = _dt.datetime.now(_dt.UTC)
        self._live: Any = None

    def __enter__(self) -> LiveTail:
        from rich.live import Live

        self._live = Live(self._footer(), console=self.console, refresh_per_second=4, transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
        self.console.print(self._footer())

    def add(self, event: Any) -> None:
        self.total += 1
        kind = _type(event)
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        self.last_seq = event.seq
        self.state = "live" if self.state in ("connecting", "live") else self.state
        # One line per event, whatever the terminal's width: the data is cut to what is left.
        self.console.print(event_text(event, self.console.width), no_wrap=True, overflow="ellipsis", crop=True)
        self._live.update(self._footer())

    def notice(self, frame: Frame) -> None:
        """A stream frame (protocol/streams.py) other than an event."""
        kind = frame.type
        if isinstance(frame, Hello):
            self.state = "replaying" if frame.replay else "live"
        elif kind == "live":
            self.state = "live"
        elif kind == "lagging":
            self.state = "catching up"
        elif kind == "end":
            self.state = "ended"
        self._live.update(self._footer())

    def status(self, text: str) -> None:
        from rich.text import Text

        self.state = "reconnecting" if "reconnecting" in text else "live"
        self.console.print(Text(f"llmgine: {text}", style="yellow"))
        self._live.update(self._footer())

    def _footer(self) -> Any:
        from rich.text import Text

        elapsed = max((_dt.datetime.now(_dt.UTC) - self.started).total_seconds(), 1e-6)
        footer = Text()
        colour = {"live": "green", "reconnecting": "red", "ended": "dim"}.get(self.state, "yellow")
        footer.append(f"● {self.state}", style=f"bold {colour}")
        noun = "event" if self.total == 1 else "events"
        footer.append(f"  {self.title}  {self.total} {noun}  {self.total / elapsed:.1f}/s")
        if self.last_seq is not None:
            footer.append(f"  last seq {self.last_seq}", style="dim")
        top = sorted(self.by_type.items(), key=lambda kv: -kv[1])[:5]
        for name, count in top:
            footer.append("  ")
            footer.append(name, style=_type_style(name))
            footer.append(f" {count}")
        # One line at the terminal's width: a wrapped footer left its second line behind.
        footer.truncate(self.console.width, overflow="ellipsis")
        return footer


def tool_call_line(data: dict[str, Any]) -> str:
    """EngineToolCall as one line: ``get_weather({"location":"Oslo"})``."""
    return f"{visible_line(str(data.get('tool_name')))}({_compact(data.get('arguments') or {}, 200)})"


def tool_result_line(data: dict[str, Any]) -> str:
    """ToolExecuted as one line: its result, or its error."""
    error = data.get("error")
    if error:
        return visible_line(f"{data.get('tool_name')} failed: {error.get('code')}: {error.get('message')}")
    return f"{visible_line(str(data.get('tool_name')))} → {_compact(data.get('result'), 200)}"


class PlainAnswer:
    """An answer written as it arrives (piped, or not a terminal): the text to stdout, flushed
    per delta, so `llmgine ask ... | wc -w` sees only the answer; tool calls to stderr."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.last = "\n"
        self.streamed = False  # whether any text of this answer was written yet

    def __enter__(self) -> PlainAnswer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()

    def delta(self, text: str) -> None:
        if text:
            self.env.stdout.write(text)
            self.env.stdout.flush()
            self.last = text[-1]
            self.streamed = True

    def tool_call(self, data: dict[str, Any]) -> None:
        self.env.err(f"tool: {tool_call_line(data)}")

    def tool_result(self, data: dict[str, Any]) -> None:
        self.env.err(f"tool: {tool_result_line(data)}")

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Nothing to pause: a question asked meanwhile goes to stderr."""
        return contextlib.nullcontext()

    def finish(self, text: str) -> None:
        # The result repeats what was streamed; print it only if nothing was (an answer that
        # ends with a newline must not come twice).
        if not self.streamed and text:
            self.delta(text)
        self.streamed = False  # the next answer (chat) starts afresh

    def end(self) -> None:
        if self.last != "\n":
            self.env.stdout.write("\n")
            self.env.stdout.flush()
            self.last = "\n"


class RichAnswer:
    """An answer on a terminal: the text grows in place as it streams, tool calls print above
    it as they happen, and the finished answer is re-drawn as Markdown."""

    def __init__(self, env: Environment) -> None:
        from rich.console import Console

        self.console = Console(file=env.stdout, force_terminal=True, highlight=False)
        self.text = ""
        self._live: Any = None

    def __enter__(self) -> RichAnswer:
        from rich.live import Live
        from rich.text import Text

        self._live = Live(Text(""), console=self.console, refresh_per_second=12, vertical_overflow="visible")
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def delta(self, text: str) -> None:
        from rich.text import Text

        self.text += text
        # A model's text may hold terminal escapes (a page a tool fetched): shown, not obeyed.
        self._live.update(Text(visible_text(self.text)))

    def tool_call(self, data: dict[str, Any]) -> None:
        from rich.text import Text

        self.console.print(Text(f"⚙ {tool_call_line(data)}", style="cyan"))

    def tool_result(self, data: dict[str, Any]) -> None:
        from rich.text import Text

        style = "red" if data.get("error") else "dim"
        self.console.print(Text(f"  {tool_result_line(data)}", style=style))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The live display stopped while a question is asked on the terminal."""
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def finish(self, text: str) -> None:
        from rich.markdown import Markdown

        self.text = text or self.text
        # No OSC 8 hyperlinks: a link shows its target, whatever its text says (a model's text).
        self._live.update(Markdown(visible_text(self.text), hyperlinks=False), refresh=True)
