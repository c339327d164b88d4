"""Tracing, the spans API: spans with W3C trace context, kept in a bounded buffer until stored
(``trace_store.py`` writes them to SQLite and reads traces back).

    with tracing.span("tool.call", tool=name) as sp:
        ...
        sp.set(status="ok")

A span started inside another (in the same task, or in a task created inside it) becomes its
child; the first span of a request continues the client's ``traceparent`` when one was sent.
Spans are always given ids, so trace ids reach logs, events and responses even with
ENABLE_TRACING off; only recording (buffering, storing, exporting) is switched off.

Sampling (issue #18): the trace id goes on every record, but spans are *stored* only for a
sampled fraction of traces (``observability.trace_sample_rate``, default 1%), decided once at
the trace's root from the trace id itself (``sampled_by_rate``: deterministic, so every span of a
sampled trace is kept, whichever task or queued command ends it), or by the client's
``traceparent`` when its sampled flag is set. A span that fails, or takes longer than
``observability.slow_span_ms``, is stored even in an unsampled trace (with ``sampled: false``
among its attributes, so a reader knows the trace around it is partial).

A stored span goes into the ``Tracer``'s buffer as a plain tuple (the row ``trace_store`` writes);
``Observability`` flushes the buffer from the telemetry writer's thread (and hands stored spans
to OTLP when configured). A full buffer drops the newest spans and counts them. An unsampled,
fast, successful span costs its ids and two clock reads: no attribute cleaning, no buffering.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llmgine_daemon.observability import metrics
from llmgine_daemon.observability.context import CURRENT_SPAN, FIELD_NAMES, FIELDS

TRACEPARENT = "traceparent"
# The bound fields (observability/context.py) a new span takes as attributes.
_SPAN_FIELDS = frozenset(FIELD_NAMES) - {"request_id"}
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_BUFFER = 20_000
DEFAULT_SAMPLE_RATE = 0.01
DEFAULT_SLOW_SPAN_MS = 250.0
# Attribute values are clipped: a span is a summary, not a copy of the payload.
MAX_ATTR_CHARS = 512
# Keys whose values are never recorded, whoever passes them.
SECRET_KEYS = re.compile(r"(?i)(authorization|token|secret|password|api[_-]?key|cookie)")


# Ids come from a pooled os.urandom read: secrets.token_hex makes one getrandom syscall per id,
# and every request and command makes several (bench/run.py, profile in bench/README.md).
_POOL_BYTES = 4096
_pool = b""
_pos = _POOL_BYTES
_pool_lock = threading.Lock()


def _random_hex(n: int) -> str:
    global _pool, _pos
    with _pool_lock:
        if _pos + n > len(_pool):
            _pool, _pos = os.urandom(_POOL_BYTES), 0
        raw = _pool[_pos : _pos + n]
        _pos += n
    return raw.hex()


def new_trace_id() -> str:
    # The first 6 bytes are the time in milliseconds, the other 10 random (W3C Trace Context
    # level 2 asks only the rightmost 7 to be random): traces made together sit together in
    # the spans_trace index, so storing them dirties a few pages, not one per span.
    return f"{time.time_ns() // 1_000_000:012x}" + _random_hex(10)


def new_span_id() -> str:
    return _random_hex(8)


_SCALE = 1 << 32


def sampled_by_rate(trace_id: str, rate: float) -> bool:
    """Whether a trace is in the sampled fraction ``rate``: read from the id's last 8 hex digits
    (random in our ids, and W3C asks the rightmost 7 bytes of any trace id to be random), so
    the same id gives the same answer anywhere, at any time - also when it is looked up."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int(trace_id[-8:], 16) < rate * _SCALE


class Remote:
    """A parent that lives elsewhere: the client's span from its ``traceparent`` header."""

    __slots__ = ("trace_id", "span_id", "sampled")

    def __init__(self, trace_id: str, span_id: str, sampled: bool = True) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled


def parse_traceparent(header: str | None) -> Remote | None:
    """The W3C trace context header; anything malformed is ignored (a new trace starts)."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return Remote(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    # Attribute names are a small fixed set; the regex runs once per name, not per span.
    return SECRET_KEYS.search(key) is not None


def clean_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if _secret_key(key):
            out[key] = "[redacted]"
        elif isinstance(value, (bool, int, float)):
            out[key] = value
        else:
            text = str(value)
            out[key] = text if len(text) <= MAX_ATTR_CHARS else text[: MAX_ATTR_CHARS - 1] + "…"
    return out


class Span:
    __slots__ = (
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "kind",
        "start",
        "_t0",
        "duration_ms",
        "status",
        "error",
        "attributes",
        "local_root",
        "recording",
        "sampled",
        "_tracer",
    )

    def __init__(
        self,
        name: str,
        trace_id: str,
        parent_id: str | None,
        *,
        kind: str = "internal",
        attributes: dict[str, Any] | None = None,
        local_root: bool = False,
        recording: bool = True,
        sampled: bool = True,
        tracer: Tracer | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start = time.time()
        self._t0 = time.perf_counter()
        self.duration_ms: float | None = None
        self.status = "ok"
        self.error: str | None = None
        # Raw until the span is stored (cleaned then, in ``Tracer.finished``): most spans are not.
        self.attributes: dict[str, Any] = attributes if attributes is not None else {}
        self.local_root = local_root
        self.recording = recording
        self.sampled = sampled
        self._tracer = tracer

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def set(self, **attributes: Any) -> None:
        self.attributes.update(attributes)

    def fail(self, error: BaseException | str) -> None:
        self.status = "error"
        if isinstance(error, BaseException):
            code = getattr(error, "code", None)
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.error = f"{code}: {message}" if isinstance(code, str) else f"{type(error).__name__}: {message}"
        else:
            self.error = error
        self.error = self.error[:MAX_ATTR_CHARS]

    def end(self, *, duration_ms: float | None = None) -> None:
        if self.duration_ms is not None:
            return  # ended twice (an error path and a finally): keep the first
        self.duration_ms = duration_ms if duration_ms is not None else (time.perf_counter() - self._t0) * 1000
        if self.recording and self._tracer is not None:
            self._tracer.finished(self)

    @property
    def session_id(self) -> str | None:
        value = self.attributes.get("session_id")
        return str(value) if value is not None else None

    def row(self) -> SpanRow:
        """The stored form (``trace_store.insert_spans`` writes it); attributes cleaned here."""
        return (
            self.trace_id,
            self.span_id,
            self.parent_id,
            self.name,
            self.kind,
            self.start,
            self.duration_ms or 0.0,
            self.status,
            self.error,
            self.attributes,
            self.session_id,
            int(self.local_root),
        )


# trace_id, span_id, parent_id, name, kind, start (unix seconds), duration_ms, status, error,
# attributes (cleaned), session_id, local_root (0/1): what the buffer holds and SQLite gets.
SpanRow = tuple[str, str, str | None, str, str, float, float, str, str | None, dict[str, Any], str | None, int]


class Tracer:
    """Buffers finished spans of one daemon; ``drain()`` hands them to the flusher."""

    def __init__(
        self,
        enabled: bool = True,
        max_buffer: int = MAX_BUFFER,
        *,
        sample_rate: float = DEFAULT_SAMPLE_RATE,
        slow_span_ms: float = DEFAULT_SLOW_SPAN_MS,
    ) -> None:
        self.enabled = enabled
        self.max_buffer = max_buffer
        self.sample_rate = sample_rate
        self.slow_span_ms = slow_span_ms
        self._buffer: deque[SpanRow] = deque()
        self._lock = threading.Lock()
        # Called with each stored span (the OTLP exporter), after buffering.
        self.exporters: list[Callable[[Span], None]] = []

    def sampled(self, trace_id: str) -> bool:
        return sampled_by_rate(trace_id, self.sample_rate)

    def start(
        self,
        name: str,
        *,
        parent: Span | Remote | None = None,
        kind: str = "internal",
        record: bool = True,
        **attributes: Any,
    ) -> Span:
        """A new span under ``parent`` (default: the current span). Does not make it current."""
        return self.start_with(name, attributes, parent=parent, kind=kind, record=record)

    def start_with(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        parent: Span | Remote | None = None,
        kind: str = "internal",
        record: bool = True,
    ) -> Span:
        """``start`` with the attributes as a dict the span then owns (the request span's: no
        keyword arguments packed and unpacked per request)."""
        if parent is None:
            parent = CURRENT_SPAN.get()
        bound = FIELDS.get()
        if bound:  # the fields bound around it come first; its own attributes win
            attrs = {k: v for k, v in bound.items() if k in _SPAN_FIELDS}
            attrs.update(attributes)
        else:
            attrs = attributes
        if parent is None:
            trace_id = new_trace_id()
            parent_id, local_root, sampled = None, True, sampled_by_rate(trace_id, self.sample_rate)
        elif isinstance(parent, Remote):
            # The client's sampled flag is honoured; without it, the trace id decides (the
            # same answer our own traceparent carried, when a queued command continues it).
            trace_id, parent_id, local_root = parent.trace_id, parent.span_id, True
            sampled = parent.sampled or sampled_by_rate(trace_id, self.sample_rate)
        else:
            trace_id, parent_id, local_root, sampled = parent.trace_id, parent.span_id, False, parent.sampled
            record = record and parent.recording
        return Span(
            name,
            trace_id,
            parent_id,
            kind=kind,
            attributes=attrs,
            local_root=local_root,
            recording=self.enabled and record,
            sampled=sampled,
            tracer=self,
        )

    def finished(self, span: Span) -> None:
        if not span.sampled:
            # Kept anyway when it failed or was slow, marked so the partial trace is explained.
            if span.status != "error" and (span.duration_ms or 0.0) < self.slow_span_ms:
                return
            span.attributes["sampled"] = False
        span.attributes = clean_attributes(span.attributes)
        row = span.row()
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                metrics.inc("telemetry_dropped_total", kind="span")
                return
            self._buffer.append(row)
        for export in self.exporters:
            try:
                export(span)
            except Exception:  # an exporter problem never fails the traced work
                pass

    def drain(self) -> list[SpanRow]:
        with self._lock:
            spans = list(self._buffer)
            self._buffer.clear()
        return spans

    def record(
        self,
        name: str,
        parent: Span | Remote,
        start: float,
        duration_ms: float,
        *,
        error: str | None = None,
        **attributes: Any,
    ) -> None:
        """Record a span measured elsewhere (the storage commit, timed by the writer task; a
        command's wait in its queue, known only when it starts)."""
        if not (self.enabled and getattr(parent, "recording", True)):
            return
        if not (parent.sampled or error or duration_ms >= self.slow_span_ms):
            return  # not stored: no Span built at all
        span = Span(name, parent.trace_id, parent.span_id, attributes=attributes, tracer=self, sampled=parent.sampled)
        span.start = start
        if error:
            span.fail(error)
        span.end(duration_ms=duration_ms)

    def span(
        self, name: str, *, kind: str = "internal", parent: Span | Remote | None = None, **attributes: Any
    ) -> Scope:
        return Scope(self.start_with(name, attributes, parent=parent, kind=kind))


class Scope:
    """``with tracer.span(...) as sp``: the span is current inside, fails with what escapes it,
    and ends on the way out. A class, not ``contextlib.contextmanager``: a generator-based
    manager costs a few microseconds more, and every command runs two of these."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        self._token = CURRENT_SPAN.set(self.span)
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        if exc is not None:
            span.fail(exc)
        CURRENT_SPAN.reset(self._token)
        span.end()


# -- the module-level API --------------------------------------------------------------------

_DISABLED = Tracer(enabled=False)
_current: Tracer = _DISABLED


def install(tracer: Tracer) -> None:
    global _current
    _current = tracer


def uninstall(tracer: Tracer) -> None:
    global _current
    if _current is tracer:
        _current = _DISABLED


def current() -> Tracer:
    return _current


def span(name: str, *, kind: str = "internal", parent: Span | Remote | None = None, **attributes: Any) -> Scope:
    """``with tracing.span("llm.call", provider=p, model=m) as sp:`` - see the module docstring."""
    return _current.span(name, kind=kind, parent=parent, **attributes)


def current_span() -> Span | None:
    return CURRENT_SPAN.get()


def current_traceparent() -> str | None:
    """Store this with queued work so the worker can continue the trace later."""
    sp = CURRENT_SPAN.get()
    return sp.traceparent if sp is not None else None
