"""Metrics registry, tracing context and log formatting, without the HTTP layer."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, NamedTuple

import pytest
from llmgine_daemon.observability import metrics, tracing
from llmgine_daemon.observability.context import bind, current_trace_id
from llmgine_daemon.observability.logs import ContextFilter, JsonFormatter, TextFormatter, scrub_text
from llmgine_daemon.observability.metrics import MAX_SERIES, Histogram, Registry
from llmgine_daemon.observability.tracing import Tracer, parse_traceparent


def test_histogram_quantiles_are_bounded_and_ordered():
    hist = Histogram(metrics.LATENCY_BUCKETS)
    for i in range(1, 1001):
        hist.observe(i / 1000)  # 1 ms .. 1 s, uniform
    p50, p95, p99 = hist.quantile(0.5), hist.quantile(0.95), hist.quantile(0.99)
    assert 0.25 <= p50 <= 0.5 + 1e-9
    assert p50 <= p95 <= p99 <= hist.max == 1.0
    assert hist.count == 1000 and len(hist.counts) == len(metrics.LATENCY_BUCKETS) + 1
    assert Histogram((1.0,)).quantile(0.5) is None


def test_series_are_bounded():
    registry = Registry()
    for i in range(MAX_SERIES + 50):
        registry.inc("events_published_total", type=f"T{i}")
    series = registry._values["events_published_total"]
    assert len(series) == MAX_SERIES + 1
    assert series[(metrics.OTHER,)] == 50
    assert registry._values["series_overflow_total"][("events_published_total",)] == 50


def test_catalog_catches_typos():
    registry = Registry()
    with pytest.raises(KeyError):
        registry.inc("event_published_total", type="x")
    with pytest.raises(ValueError):
        registry.inc("events_published_total", kind="x")
    with pytest.raises(TypeError):
        registry.observe("events_published_total", 1.0, type="x")


def test_module_api_is_a_noop_without_a_daemon():
    metrics.inc("events_published_total", type="x")  # nothing installed: ignored
    registry = Registry()
    metrics.install(registry)
    try:
        metrics.inc("events_published_total", type="x")
        metrics.gauge_add("ws_subscribers", 2)
        metrics.gauge_add("ws_subscribers", -1)
        metrics.gauge_callback("sandbox_workers", lambda: [({"state": "idle"}, 3)])
    finally:
        metrics.uninstall(registry)
    collected = {m.name: rows for m, rows in registry.collect()}
    assert collected["events_published_total"] == [({"type": "x"}, 1)]
    assert collected["ws_subscribers"] == [({}, 1)]
    assert collected["sandbox_workers"] == [({"state": "idle"}, 3.0)]


def test_traceparent_parsing():
    remote = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert remote is not None and remote.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and remote.sampled
    assert parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00").sampled is False
    # future versions may append fields; version 00 may not; ff is invalid
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") is not None
    for bad in (
        "",
        "00-xyz",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    ):
        assert parse_traceparent(bad) is None


async def test_spans_nest_across_tasks_and_record_errors():
    tracer = Tracer(sample_rate=1.0)
    tracing.install(tracer)
    try:
        with bind(session_id="s1", command_id="c1"), tracing.span("command.run", command_type="Echo") as outer:

            async def child() -> None:
                with tracing.span("tool.call", tool="t"):
                    assert current_trace_id() == outer.trace_id

            await asyncio.create_task(child())
            with pytest.raises(RuntimeError), tracing.span("handler.run"):
                raise RuntimeError("boom")
    finally:
        tracing.uninstall(tracer)
    spans = {s.name: s for s in (Row(*row) for row in tracer.drain())}
    assert set(spans) == {"command.run", "tool.call", "handler.run"}
    assert spans["tool.call"].parent_id == spans["handler.run"].parent_id == outer.span_id
    assert spans["handler.run"].status == "error" and "boom" in spans["handler.run"].error
    assert spans["command.run"].attributes == {"session_id": "s1", "command_id": "c1", "command_type": "Echo"}
    assert spans["command.run"].local_root and not spans["tool.call"].local_root


def test_disabled_tracer_propagates_ids_but_records_nothing():
    tracer = Tracer(enabled=False)
    tracing.install(tracer)
    try:
        with tracing.span("a") as a, tracing.span("b") as b:
            assert b.trace_id == a.trace_id and b.parent_id == a.span_id
    finally:
        tracing.uninstall(tracer)
    assert tracer.drain() == []


def test_span_attributes_never_hold_secrets():
    # Attributes are cleaned when a span is stored (most spans are not): what is buffered for
    # the database, and what an exporter is handed, never holds them.
    tracer = Tracer(sample_rate=1.0)
    exported: list[tracing.Span] = []
    tracer.exporters.append(exported.append)
    span = tracer.start("x", api_key="sk-123", headers_authorization="Bearer abc", n=1, long="y" * 5000)
    span.set(password="hunter2")
    span.end()
    [row] = tracer.drain()
    for attributes in (Row(*row).attributes, exported[0].attributes):
        assert attributes["api_key"] == "[redacted]" and attributes["headers_authorization"] == "[redacted]"
        assert attributes["password"] == "[redacted]"
        assert attributes["n"] == 1 and len(attributes["long"]) <= tracing.MAX_ATTR_CHARS


class Row(NamedTuple):
    """A buffered span (tracing.SpanRow) with its fields named."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start: float
    duration_ms: float
    status: str
    error: str | None
    attributes: dict[str, Any]
    session_id: str | None
    local_root: int


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.getLogger("llmgine.unit").makeRecord(
        "llmgine.unit", logging.WARNING, __file__, 1, message, (), None, extra=extra
    )
    ContextFilter().filter(record)
    return record


def test_json_and_text_formats_carry_context():
    tracer = Tracer()
    tracing.install(tracer)
    try:
        with bind(session_id="s1", engine_id="e1"), tracing.span("x") as sp:
            record = _record("hello Bearer abcdefghijk", metadata={"token": "t", "n": 2})
    finally:
        tracing.uninstall(tracer)
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "llmgine.unit" and line["timestamp"].endswith("Z")
    assert line["message"] == "hello Bearer [redacted]"
    assert line["session_id"] == "s1" and line["engine_id"] == "e1" and line["trace_id"] == sp.trace_id
    assert line["metadata"] == {"token": "[redacted]", "n": 2}
    assert "command_id" not in line  # unknown fields are left out, not null
    text = TextFormatter().format(record)
    assert "WARNING" in text and "session=s1" in text and f"trace={sp.trace_id}" in text


def test_the_text_format_cannot_be_forged_by_a_message():
    # A client writes the message (POST /api/observability/logs): a newline must not start a
    # line that looks like the daemon's, an escape sequence must not reach a terminal.
    forged = "ok\n2026-01-01T00:00:00Z CRITICAL llmgine.server: forged\x1b[31m\r"
    text = TextFormatter().format(_record(forged))
    assert "\n" not in text and "\x1b" not in text and "\r" not in text
    assert "ok\\n2026-01-01T00:00:00Z CRITICAL llmgine.server: forged\\x1b[31m\\r" in text
    # The JSON format escapes them as JSON does: the message is kept as it was.
    assert json.loads(JsonFormatter().format(_record(forged)))["message"] == forged
    # Nor where splitlines() breaks (`llmgine daemon logs -n` splits the file so), nor an
    # 8-bit CSI; other text (é) stays as it is.
    other = "a\u2028b\u2029c\x85d\x9b[2Jé"
    text = TextFormatter().format(_record(other))
    assert len(text.splitlines()) == 1 and "\x9b" not in text
    assert "a\\u2028b\\u2029c\\x85d\\x9b[2Jé" in text


def test_the_log_and_the_cli_escape_the_same_characters():
    from llmgine_daemon.observability.logs import _CONTROL_ESCAPES

    from llmgine_cli.render import _CONTROLS

    assert _CONTROLS == _CONTROL_ESCAPES


def test_the_cli_shows_no_line_break_or_escape_of_data():
    from llmgine_cli.render import visible_line

    shown = visible_line("a\u2028b\x85c\x9b[2J\ne\x1bé")
    assert len(shown.splitlines()) == 1 and "\x1b" not in shown and "\x9b" not in shown
    assert shown.endswith("é")


def test_bidirectional_controls_are_shown_as_escapes():
    """U+202E and the other explicit bidirectional controls reorder what a terminal shows after
    them ("Trojan Source"): a session name, an event type or a log message holding one printed
    a line that read differently from what it was. They are escapes, in the CLI and the log."""
    from llmgine_cli.render import visible_line

    sneaky = "invoice\u202egpj.exe \u2066x\u2069 \u202a\u202b\u202c\u202d \u2067\u2068"
    shown = visible_line(sneaky)
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in shown), shown
    assert shown.startswith("invoice\\u202egpj.exe \\u2066x\\u2069")
    text = TextFormatter().format(_record(sneaky))
    assert "\u202e" not in text and "invoice\\u202egpj.exe" in text


def test_scrub_text():
    assert scrub_text("key sk-abcdefgh12345678901234 end") == "key sk-abcdefgh… end"
    assert scrub_text("Authorization: Bearer xyz.abc-123") == "Authorization: Bearer [redacted]"


def test_emit_for_user_code(caplog):
    from llmgine_daemon.observability.logs import emit, to_record

    caplog.handler.addFilter(ContextFilter())  # what every daemon handler has
    with caplog.at_level(logging.INFO, logger="llmgine.user"), bind(session_id="s9", command_id="c9"):
        emit("warning", "from a handler", {"k": "v", "secret": "x"}, source="tool")
    [raw] = caplog.records
    record = to_record(raw)
    assert (record.level, record.source, record.session_id, record.command_id) == ("warning", "tool", "s9", "c9")
    assert record.metadata == {"k": "v", "secret": "[redacted]"}


# -- sampling (issue 18) -------------------------------------------------------------------------


def test_sampling_is_decided_by_the_trace_id():
    low, high = "a" * 24 + "00000000", "a" * 24 + "ffffffff"
    middle = "a" * 24 + "80000000"
    assert tracing.sampled_by_rate(low, 0.01) and not tracing.sampled_by_rate(high, 0.99)
    assert tracing.sampled_by_rate(high, 1.0) and not tracing.sampled_by_rate(low, 0.0)
    assert not tracing.sampled_by_rate(middle, 0.5) and tracing.sampled_by_rate(middle, 0.51)
    # About the rate over many fresh ids (ids are random in their last bytes).
    ids = [tracing.new_trace_id() for _ in range(20_000)]
    share = sum(tracing.sampled_by_rate(t, 0.1) for t in ids) / len(ids)
    assert 0.08 < share < 0.12


def test_unsampled_trace_buffers_only_failed_and_slow_spans():
    tracer = Tracer(sample_rate=0.0, slow_span_ms=250.0)
    exported: list[tracing.Span] = []
    tracer.exporters.append(exported.append)
    tracing.install(tracer)
    try:
        with tracing.span("root") as root:
            assert not root.sampled and root.traceparent.endswith("-00")
            with tracing.span("fast") as fast:
                assert fast.trace_id == root.trace_id and not fast.sampled
            with pytest.raises(ValueError), tracing.span("boom"):
                raise ValueError("no")
            slow = tracer.start("slow")
            slow.end(duration_ms=251.0)
            tracer.record("store.commit", root, 0.0, 1.0, batch_size=1)  # fast, unsampled: dropped
            tracer.record("store.commit", root, 0.0, 1.0, error="disk full", batch_size=1)
    finally:
        tracing.uninstall(tracer)
    rows = {r.name: r for r in (Row(*row) for row in tracer.drain())}
    assert set(rows) == {"boom", "slow", "store.commit"}
    assert rows["boom"].status == "error" and rows["store.commit"].error == "disk full"
    assert all(r.attributes["sampled"] is False and r.trace_id == root.trace_id for r in rows.values())
    # What is exported is what is stored.
    assert sorted(s.name for s in exported) == sorted(rows)


def test_sampled_trace_buffers_every_span_and_children_follow_the_root():
    tracer = Tracer(sample_rate=1.0)
    tracing.install(tracer)
    try:
        with tracing.span("root") as root, tracing.span("child") as child:
            assert root.sampled and child.sampled and root.traceparent.endswith("-01")
        # A client's sampled flag wins over a rate of 0, and is kept by the children.
        tracer.sample_rate = 0.0
        remote = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        with tracing.span("continued", parent=remote) as continued, tracing.span("below") as below:
            assert continued.sampled and below.sampled
    finally:
        tracing.uninstall(tracer)
    assert sorted(Row(*row).name for row in tracer.drain()) == ["below", "child", "continued", "root"]


def test_bound_children_count_like_label_calls():
    registry = Registry()
    registry.inc("http_requests_total", route="/a", method="GET", status=200)
    child = registry.counter("http_requests_total", route="/a", method="GET", status=200)
    child.inc()
    child.inc(2)
    hist = registry.histogram("http_request_duration_seconds", route="/a", method="GET")
    hist.observe(0.003)
    registry.observe("http_request_duration_seconds", 0.5, route="/a", method="GET")
    values = {m.name: rows for m, rows in registry.collect()}
    assert values["http_requests_total"] == [({"route": "/a", "method": "GET", "status": "200"}, 4)]
    [(labels, h)] = values["http_request_duration_seconds"]
    assert labels == {"route": "/a", "method": "GET"} and h.count == 2 and h.max == 0.5
    with pytest.raises(ValueError):
        registry.counter("http_requests_total", route="/a")  # the label set is still checked
    off = Registry(enabled=False)
    off.counter("storage_writes_total").inc()
    off.histogram("storage_batch_size").observe(3)
    assert off.collect() == []


def test_remembered_label_sets_count_the_same_and_keep_the_bound():
    registry = Registry()
    for _ in range(3):
        registry.inc("commands_total", type="Echo", status="completed")
        registry.inc("commands_total", status="completed", type="Echo")  # another order
        registry.observe("command_run_seconds", 0.01, type="Echo")
    registry.inc("commands_total", 2, type="Echo", status=7)
    registry.inc("commands_total", type="Echo", status="7")
    values = {m.name: rows for m, rows in registry.collect()}
    assert sorted(values["commands_total"], key=lambda r: r[0]["status"]) == [
        ({"type": "Echo", "status": "7"}, 3),
        ({"type": "Echo", "status": "completed"}, 6),
    ]
    [(_, hist)] = values["command_run_seconds"]
    assert hist.count == 3
    with pytest.raises(ValueError):
        registry.inc("commands_total", type="Echo")  # still checked, also after a hit
    with pytest.raises(TypeError):
        registry.observe("commands_total", 1.0, type="Echo", status="completed")
    registry.inc("events_published_total", type=["unhashable"])  # str()-ed, as before
    assert registry._values["events_published_total"] == {("['unhashable']",): 1}
    # Folded label sets keep being counted as folds on every call.
    for i in range(MAX_SERIES + 10):
        registry.inc("llm_calls_total", provider="p", model=f"m{i}", outcome="ok")
    for i in range(MAX_SERIES, MAX_SERIES + 10):
        registry.inc("llm_calls_total", provider="p", model=f"m{i}", outcome="ok")
    assert len(registry._values["llm_calls_total"]) == MAX_SERIES + 1
    assert registry._values["series_overflow_total"][("llm_calls_total",)] == 20
