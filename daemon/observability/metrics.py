"""In-process metrics: counters, gauges and fixed-bucket histograms with bounded memory.

Integrations are one line each and never need a handle on the app::

    from llmgine_daemon.observability import metrics
    metrics.inc("commands_total", type=cmd_type, status="completed")
    metrics.observe("command_run_seconds", elapsed, type=cmd_type)
    metrics.gauge_add("ws_subscribers", 1)

Every metric is declared once in ``CATALOG`` (name, kind, labels, help): the catalog is the
documentation, and a typo in a name or a label set raises at the call site in tests instead of
silently creating a new series. The functions write to the registry of the running daemon
(installed by ``Observability.start``); with none installed, or with ENABLE_METRICS off, they
do nothing.

Memory is bounded: each histogram is a fixed array of bucket counts, and each metric keeps at
most ``MAX_SERIES`` label sets; past that, new label sets are folded into one series whose
labels are all ``_other`` (and ``series_overflow_total`` counts the folds).

On hot paths (every HTTP request, every commit) the label lookup is done once: a *bound child*
(``Registry.counter(name, **labels)``, ``Registry.histogram(...)``) holds the series' key (or its
histogram) and only adds under the lock; callers keep children in a dict of their own. The
plain ``inc``/``observe`` calls remember the label sets they have seen too (checked against the
catalog the first time only).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_SERIES = 500
MAX_CACHED = 4096  # label sets remembered by inc/observe per kind (series are bounded anyway)
OTHER = "_other"

# Seconds: from a fast SQLite commit to a slow LLM call.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS


def _c(name: str, labels: tuple[str, ...], help: str) -> MetricDef:
    return MetricDef(name, "counter", labels, help)


def _g(name: str, labels: tuple[str, ...], help: str) -> MetricDef:
    return MetricDef(name, "gauge", labels, help)


def _h(name: str, labels: tuple[str, ...], help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> MetricDef:
    return MetricDef(name, "histogram", labels, help, buckets)


CATALOG: tuple[MetricDef, ...] = (
    # HTTP edge (api/observability.py end_request, run by api/edge.py)
    _c("http_requests_total", ("route", "method", "status"), "HTTP requests by route template, method and status"),
    _c(
        "http_fast_lane_requests_total",
        (),
        "event publishes and command submissions the fast lane took (server.fast_lane; "
        "counted in http_requests_total too)",
    ),
    _h("http_request_duration_seconds", ("route", "method"), "HTTP request latency"),
    # storage (store/db.py group commit, via Store.on_commit)
    _c("storage_transactions_total", ("outcome",), "write transactions committed (ok) or failed (error)"),
    _c("storage_writes_total", (), "write functions run inside transactions"),
    _h("storage_batch_size", (), "writes per transaction (group commit)", SIZE_BUCKETS),
    _h("storage_commit_duration_seconds", (), "time to run and commit one write transaction"),
    # events and streams
    _c("events_published_total", ("type",), "events committed to the log, by event type"),
    _g("ws_subscribers", (), "live WebSocket event subscribers"),
    _c("stream_gaps_total", (), "times a slow subscriber was told about a gap and caught up from the store"),
    # commands
    _c("commands_total", ("type", "status"), "commands finished, by type and final status"),
    _h("command_queue_wait_seconds", ("type",), "time from queued to started"),
    _h("command_run_seconds", ("type",), "time from started to finished"),
    _g("command_queue_depth", ("session_id",), "commands queued, per session"),
    _c("event_handler_runs_total", ("type", "outcome"), "event handler invocations by event type and outcome"),
    # sandbox
    _g("sandbox_workers", ("state",), "sandbox worker processes by state (busy, idle)"),
    _c(
        "sandbox_calls_total",
        ("kind", "outcome"),
        "calls into the sandbox (tool, handler) by outcome (ok, error, timeout, crash, unavailable)",
    ),
    _h("sandbox_call_duration_seconds", ("kind",), "sandbox call latency"),
    _c("sandbox_worker_crashes_total", (), "sandbox worker processes that died"),
    # MCP tool servers (mcp/connection.py)
    _c("mcp_tool_calls_total", ("server", "outcome"), "MCP tool calls by server and outcome (ok or the error code)"),
    _h("mcp_tool_call_duration_seconds", ("server",), "MCP tool call latency"),
    _c("mcp_server_restarts_total", ("server",), "MCP server connections that ended and were started again"),
    # LLM engines
    _c("llm_calls_total", ("provider", "model", "outcome"), "LLM calls by provider, model and outcome"),
    _c("llm_tokens_total", ("provider", "model", "kind"), "LLM tokens by kind (prompt, completion, cached)"),
    _c("llm_cost_usd_total", ("provider", "model"), "estimated LLM cost in USD (usage.prices)"),
    _h("llm_call_duration_seconds", ("provider", "model"), "LLM call latency"),
    # the observability pipeline itself
    _c("log_records_total", ("level",), "log records emitted by the daemon"),
    _c(
        "background_round_failures_total",
        ("round",),
        "failed rounds of the daemon's background loops (streams, webhooks, schedules, the cluster "
        "tick); each logs a line a minute at most while it keeps failing",
    ),
    _c("telemetry_dropped_total", ("kind",), "log records or spans dropped because the buffer was full"),
    _c("series_overflow_total", ("metric",), "label sets folded into _other because a metric hit MAX_SERIES"),
)
BY_NAME: dict[str, MetricDef] = {m.name: m for m in CATALOG}


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # one per bucket, plus +Inf last
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float | None:
        """Estimate like Prometheus' histogram_quantile, clamped to the observed min/max."""
        if self.count == 0:
            return None
        rank = q * self.count
        cumulative = 0
        for i, n in enumerate(self.counts):
            if n and cumulative + n >= rank:
                lower = self.buckets[i - 1] if i > 0 else 0.0
                upper = self.buckets[i] if i < len(self.buckets) else self.max
                estimate = lower + (upper - lower) * ((rank - cumulative) / n)
                return min(max(estimate, self.min), self.max)
            cumulative += n
        return self.max


def quantile_exact(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a list (used where the raw values are at hand)."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


LabelKey = tuple[str, ...]


class Registry:
    """The metric values of one daemon. Thread-safe: log records are counted from any thread."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, Any]] = {m.name: {} for m in CATALOG}
        # (name, *label items) -> the series key of a counter / the Histogram: ``inc`` and
        # ``observe`` with label sets seen before skip the catalog check and key building.
        self._counter_keys: dict[tuple[Any, ...], LabelKey] = {}
        self._histograms: dict[tuple[Any, ...], Histogram] = {}
        # Gauges computed when read (queue depth, workers) rather than kept up to date.
        self._gauge_fns: dict[str, Callable[[], Iterable[tuple[dict[str, str], float]]]] = {}

    def _key(self, metric: MetricDef, labels: dict[str, Any]) -> LabelKey:
        if len(labels) != len(metric.labels) or any(name not in labels for name in metric.labels):
            raise ValueError(f"metric {metric.name} takes labels {metric.labels}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in metric.labels)

    def _slot(self, metric: MetricDef, key: LabelKey) -> LabelKey:
        series = self._values[metric.name]
        if key in series or len(series) < MAX_SERIES:
            return key
        overflow = self._values["series_overflow_total"]
        okey = (metric.name,)
        overflow[okey] = overflow.get(okey, 0) + 1
        return tuple(OTHER for _ in metric.labels)

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:
        if not self.enabled:
            _lookup(name, "counter")  # a typo still raises with metrics off
            return
        try:
            ck = (name, *labels.items())
            key = self._counter_keys.get(ck)
        except TypeError:  # an unhashable label value: the long way (it is str()-ed there)
            ck, key = None, None
        if key is not None:
            with self._lock:
                series = self._values[name]
                series[key] = series.get(key, 0) + amount
            return
        self._add(name, "counter", amount, labels, ck)

    def _add(self, name: str, kind: str, amount: float, labels: dict[str, Any], ck: Any = None) -> None:
        metric = _lookup(name, kind)
        if not self.enabled:
            return
        key = self._key(metric, labels)
        with self._lock:
            slot = self._slot(metric, key)
            series = self._values[name]
            series[slot] = series.get(slot, 0) + amount
            # Remembered once the series exists (so the MAX_SERIES bound holds); folded label
            # sets are not, so each fold is still counted in series_overflow_total.
            if ck is not None and slot is key and len(self._counter_keys) < MAX_CACHED:
                self._counter_keys[ck] = key

    def gauge_set(self, name: str, value: float, **labels: Any) -> None:
        metric = _lookup(name, "gauge")
        if not self.enabled:
            return
        key = self._key(metric, labels)
        with self._lock:
            self._values[name][self._slot(metric, key)] = value

    def gauge_add(self, name: str, delta: float, **labels: Any) -> None:
        self._add(name, "gauge", delta, labels)

    def gauge_remove(self, name: str, **labels: Any) -> None:
        """Forget one gauge series (a session that ended has no queue depth any more)."""
        metric = _lookup(name, "gauge")
        with self._lock:
            self._values[name].pop(self._key(metric, labels), None)

    def gauge_callback(self, name: str, fn: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:
        """Let the owner of a value report it when metrics are read: ``fn() -> [(labels, value)]``."""
        _lookup(name, "gauge")
        self._gauge_fns[name] = fn

    def observe(self, name: str, value: float, **labels: Any) -> None:
        if not self.enabled:
            _lookup(name, "histogram")
            return
        try:
            ck = (name, *labels.items())
            hist = self._histograms.get(ck)
        except TypeError:
            ck, hist = None, None
        if hist is not None:
            with self._lock:
                hist.observe(value)
            return
        metric = _lookup(name, "histogram")
        key = self._key(metric, labels)
        with self._lock:
            slot = self._slot(metric, key)
            series = self._values[name]
            hist = series.get(slot)
            if hist is None:
                hist = series[slot] = Histogram(metric.buckets)
            hist.observe(value)
            if ck is not None and slot is key and len(self._histograms) < MAX_CACHED:
                self._histograms[ck] = hist

    def counter(self, name: str, **labels: Any) -> BoundCounter:
        """A counter series, looked up once: ``child.inc()`` per event."""
        return BoundCounter(self, self._bind(_lookup(name, "counter"), labels))

    def histogram(self, name: str, **labels: Any) -> BoundHistogram:
        """A histogram series, looked up once: ``child.observe(value)`` per event."""
        metric = _lookup(name, "histogram")
        name, key = self._bind(metric, labels)
        if not self.enabled:
            return BoundHistogram(self, None)
        with self._lock:
            series = self._values[name]
            hist = series.get(key)
            if hist is None:
                hist = series[key] = Histogram(metric.buckets)
        return BoundHistogram(self, hist)

    def _bind(self, metric: MetricDef, labels: dict[str, Any]) -> tuple[str, LabelKey]:
        key = self._key(metric, labels)
        if self.enabled:
            with self._lock:
                key = self._slot(metric, key)
        return metric.name, key

    def collect(self) -> list[tuple[MetricDef, list[tuple[dict[str, str], Any]]]]:
        """A consistent copy of every metric: [(def, [(labels, value or Histogram)])]."""
        out: list[tuple[MetricDef, list[tuple[dict[str, str], Any]]]] = []
        if not self.enabled:
            return out
        computed: dict[str, list[tuple[dict[str, str], float]]] = {}
        for name, fn in list(self._gauge_fns.items()):
            try:
                computed[name] = [(dict(labels), float(value)) for labels, value in fn()]
            except Exception:  # a broken callback must not break /metrics
                computed[name] = []
        with self._lock:
            for metric in CATALOG:
                rows: list[tuple[dict[str, str], Any]] = []
                for key, value in self._values[metric.name].items():
                    labels = dict(zip(metric.labels, key, strict=True))
                    if isinstance(value, Histogram):
                        value = Histogram(
                            value.buckets, list(value.counts), value.count, value.sum, value.min, value.max
                        )
                    rows.append((labels, value))
                rows.extend(computed.get(metric.name, []))
                out.append((metric, rows))
        return out


class BoundCounter:
    __slots__ = ("_registry", "_series", "_key")

    def __init__(self, registry: Registry, bound: tuple[str, LabelKey]) -> None:
        self._registry = registry
        self._series: dict[LabelKey, Any] = registry._values[bound[0]]
        self._key = bound[1]

    def inc(self, amount: float = 1) -> None:
        registry = self._registry
        if not registry.enabled:
            return
        with registry._lock:
            self._series[self._key] = self._series.get(self._key, 0) + amount


class BoundHistogram:
    __slots__ = ("_registry", "_hist")

    def __init__(self, registry: Registry, hist: Histogram | None) -> None:
        self._registry = registry
        self._hist = hist

    def observe(self, value: float) -> None:
        if self._hist is None:
            return
        with self._registry._lock:
            self._hist.observe(value)


def _lookup(name: str, kind: str) -> MetricDef:
    metric = BY_NAME.get(name)
    if metric is None:
        raise KeyError(f"unknown metric {name!r}: declare it in observability/metrics.py CATALOG")
    if metric.kind != kind:
        raise TypeError(f"metric {name} is a {metric.kind}, not a {kind}")
    return metric


# -- the module-level API the rest of the daemon calls ---------------------------------------

_DISABLED = Registry(enabled=False)
_current: Registry = _DISABLED


def install(registry: Registry) -> None:
    global _current
    _current = registry


def uninstall(registry: Registry) -> None:
    global _current
    if _current is registry:  # a second app in the same process (tests) may have replaced it
        _current = _DISABLED


def current() -> Registry:
    return _current


def inc(name: str, amount: float = 1, **labels: Any) -> None:
    _current.inc(name, amount, **labels)


def observe(name: str, value: float, **labels: Any) -> None:
    _current.observe(name, value, **labels)


def gauge_set(name: str, value: float, **labels: Any) -> None:
    _current.gauge_set(name, value, **labels)


def gauge_add(name: str, delta: float, **labels: Any) -> None:
    _current.gauge_add(name, delta, **labels)


def gauge_remove(name: str, **labels: Any) -> None:
    _current.gauge_remove(name, **labels)


def gauge_callback(name: str, fn: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:
    _current.gauge_callback(name, fn)
