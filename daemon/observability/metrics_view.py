"""Metrics out: the JSON snapshot (``GET /api/observability/metrics``) and Prometheus text.

The Prometheus exposition is produced by prometheus_client from our registry through a custom
collector, so the format (escaping, histogram buckets, HELP/TYPE lines) is the library's.

Per-session figures are computed from the store, not kept as labelled series: sessions are
unbounded, the tables already hold every command and event with its timestamps, and the
answer is then exact and survives a restart.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmgine_daemon.observability.metrics import BY_NAME, Histogram, Registry, quantile_exact
from llmgine_daemon.protocol import MetricFamily, MetricSeries, MetricsSnapshot, now_iso, parse_iso
from llmgine_daemon.store.migrations import UNFINISHED_TERM

# Through the partial index of unfinished commands (migration 137), which it repeats.
QUEUED_IN_SESSION = f"SELECT COUNT(*) FROM commands WHERE session_id = ? AND {UNFINISHED_TERM} AND status = 'queued'"

if TYPE_CHECKING:
    from llmgine_daemon.observability.core import Observability

PREFIX = "llmgine_"
SESSION_SAMPLE = 5000  # newest commands used for a session's latency percentiles


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def histogram_series(labels: dict[str, str], hist: Histogram) -> MetricSeries:
    return MetricSeries(
        labels=labels,
        count=hist.count,
        sum=_r(hist.sum),
        min=_r(hist.min) if hist.count else None,
        max=_r(hist.max) if hist.count else None,
        p50=_r(hist.quantile(0.5)),
        p95=_r(hist.quantile(0.95)),
        p99=_r(hist.quantile(0.99)),
    )


def snapshot(registry: Registry, uptime: float) -> MetricsSnapshot:
    families = []
    for metric, rows in registry.collect():
        series = [
            histogram_series(labels, value)
            if isinstance(value, Histogram)
            else MetricSeries(labels=labels, value=_r(float(value)))
            for labels, value in rows
        ]
        families.append(MetricFamily(name=metric.name, type=metric.kind, help=metric.help, series=series))
    return MetricsSnapshot(
        timestamp=now_iso(), enabled=registry.enabled, uptime=uptime, session_id=None, metrics=families
    )


# -- per session, from the store ---------------------------------------------------------------


def _seconds_between(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    try:
        return max(0.0, (parse_iso(b) - parse_iso(a)).total_seconds())
    except ValueError:
        return None


def _exact_series(labels: dict[str, str], values: list[float]) -> MetricSeries:
    return MetricSeries(
        labels=labels,
        count=len(values),
        sum=_r(sum(values)),
        min=_r(min(values)),
        max=_r(max(values)),
        p50=_r(quantile_exact(values, 0.5)),
        p95=_r(quantile_exact(values, 0.95)),
        p99=_r(quantile_exact(values, 0.99)),
    )


def _family(name: str, series: list[MetricSeries]) -> MetricFamily:
    metric = BY_NAME[name]
    return MetricFamily(name=name, type=metric.kind, help=metric.help, series=series)


def read_session_metrics(conn: sqlite3.Connection, session_id: str) -> list[MetricFamily]:
    # Sorted here, not by ORDER BY: PostgreSQL's follows the database's collation (bus/tools.py).
    commands = sorted(
        conn.execute(
            "SELECT command_type, status, COUNT(*) FROM commands WHERE session_id = ? GROUP BY 1, 2", (session_id,)
        ).fetchall()
    )
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for ctype, created, started, finished in conn.execute(
        "SELECT command_type, created_at, started_at, finished_at FROM commands"
        " WHERE session_id = ? AND started_at IS NOT NULL ORDER BY created_at DESC LIMIT ?",
        (session_id, SESSION_SAMPLE),
    ):
        wait = _seconds_between(created, started)
        if wait is not None:
            waits[ctype].append(wait)
        run = _seconds_between(started, finished)
        if run is not None:
            runs[ctype].append(run)
    queued = conn.execute(QUEUED_IN_SESSION, (session_id,)).fetchone()[0]
    events = sorted(
        conn.execute(
            "SELECT event_type, COUNT(*) FROM events WHERE session_id = ? GROUP BY 1", (session_id,)
        ).fetchall()
    )
    return [
        _family(
            "commands_total", [MetricSeries(labels={"type": t, "status": s}, value=float(n)) for t, s, n in commands]
        ),
        _family("command_queue_wait_seconds", [_exact_series({"type": t}, v) for t, v in sorted(waits.items())]),
        _family("command_run_seconds", [_exact_series({"type": t}, v) for t, v in sorted(runs.items())]),
        _family("command_queue_depth", [MetricSeries(labels={"session_id": session_id}, value=float(queued))]),
        _family("events_published_total", [MetricSeries(labels={"type": t}, value=float(n)) for t, n in events]),
    ]


async def session_snapshot(obs: Observability, session_id: str, uptime: float) -> MetricsSnapshot:
    families = await obs.store.read(lambda c: read_session_metrics(c, session_id))
    return MetricsSnapshot(
        timestamp=now_iso(), enabled=obs.registry.enabled, uptime=uptime, session_id=session_id, metrics=families
    )


# -- Prometheus --------------------------------------------------------------------------------


class _Collector:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def describe(self) -> list[Any]:
        return []  # names are not known up front to prometheus_client: skip its probe collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for metric, rows in self.registry.collect():
            name = PREFIX + metric.name
            labels = list(metric.labels)
            family: Any
            if metric.kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), metric.help, labels=labels)
                for values, value in rows:
                    family.add_metric([values.get(n, "") for n in labels], float(value))
            elif metric.kind == "gauge":
                family = GaugeMetricFamily(name, metric.help, labels=labels)
                for values, value in rows:
                    family.add_metric([values.get(n, "") for n in labels], float(value))
            else:
                family = HistogramMetricFamily(name, metric.help, labels=labels)
                for values, hist in rows:
                    cumulative, buckets = 0, []
                    for bound, count in zip(metric.buckets, hist.counts, strict=False):
                        cumulative += count
                        buckets.append((repr(float(bound)), cumulative))
                    buckets.append(("+Inf", hist.count))
                    family.add_metric([values.get(n, "") for n in labels], buckets, hist.sum)
            yield family


def prometheus_text(registry: Registry) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    target = CollectorRegistry(auto_describe=False)
    target.register(_Collector(registry))  # type: ignore[arg-type]
    return generate_latest(target), CONTENT_TYPE_LATEST
