"""``Observability``: the per-daemon owner of the metric registry, the tracer and the log sink.

``create_app`` starts one after the stores are open and stops it before they close. While
running it is *installed*: the module-level ``metrics.inc`` / ``tracing.span`` calls anywhere
in the daemon reach it, and Python logging feeds its ``StoreHandler``.

One background task flushes buffered log records and finished spans to the telemetry database
(a file of its own: store/telemetry.py) together, in one write (so telemetry costs one
transaction per interval, not one per record), trimming
both tables to their row bounds as it inserts; pruning by age is store/maintenance.py's
background retention. Readers call ``flush()`` first, so what was logged before a request is
visible to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import sqlite3
import time
from typing import Any

from llmgine_daemon.aio import cancel_and_wait
from llmgine_daemon.observability import metrics, tracing
from llmgine_daemon.observability.context import CURRENT_SPAN
from llmgine_daemon.observability.logs import LEVELS, StoreHandler, insert_logs
from llmgine_daemon.observability.trace_store import insert_spans
from llmgine_daemon.observability.tracing import Span, Tracer
from llmgine_daemon.protocol import LogRecord
from llmgine_daemon.settings import Settings
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.errors import StorageError

log = logging.getLogger("llmgine.observability")

FLUSH_INTERVAL = 0.5
_NOT_STORED = {"lg_stored": True}  # a record the store handler leaves alone (logs.StoreHandler)


class Observability:
    def __init__(self, settings: Settings, store: Store, telemetry: Store) -> None:
        self.settings = settings
        self.store = store  # the main database: its commits are timed and traced
        self.telemetry = telemetry  # where logs and spans are written and read
        self.metrics_enabled: bool = settings["observability.enable_metrics"]
        self.tracing_enabled: bool = settings["observability.enable_tracing"]
        self.log_rows: int = settings["observability.log_retention_rows"]
        self.session_log_rows: int = settings["security.limits.session_log_rows"]
        # Records of each session written since its rows were last trimmed to
        # session_log_rows: a session is looked at once per tenth of that (logs.trim_sessions).
        self._unchecked: dict[str, int] = {}
        self._since_trim = 0  # records written since the table was last trimmed to log_rows
        self.span_rows: int = settings["observability.trace_retention_spans"]
        # The same for spans (security.limits.session_span_rows, logs.trim_sessions).
        self.session_span_rows: int = settings["security.limits.session_span_rows"]
        self._spans_unchecked: dict[str, int] = {}
        self._spans_since_trim = 0
        self.level = LEVELS[settings["logging.level"]]
        self.registry = metrics.Registry(enabled=self.metrics_enabled)
        self.sample_rate: float = settings["observability.trace_sample_rate"]
        self.slow_span_ms: float = settings["observability.slow_span_ms"]
        self.tracer = Tracer(
            enabled=self.tracing_enabled,
            sample_rate=self.sample_rate,
            slow_span_ms=self.slow_span_ms or math.inf,  # 0: failed spans only
        )
        # Metric children bound once (metrics.py): per request and per commit, no label lookup.
        self._http: dict[tuple[str, str, int], tuple[metrics.BoundCounter, metrics.BoundHistogram]] = {}
        self._commit_ok = self.registry.counter("storage_transactions_total", outcome="ok")
        self._commit_error = self.registry.counter("storage_transactions_total", outcome="error")
        self._writes = self.registry.counter("storage_writes_total")
        self._batch_size = self.registry.histogram("storage_batch_size")
        self._commit_seconds = self.registry.histogram("storage_commit_duration_seconds")
        self.handler = StoreHandler(self.level)
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._saved_level: int | None = None
        self._exporter: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        metrics.install(self.registry)
        tracing.install(self.tracer)
        self.store.on_commit = self._on_commit
        llmgine_logger = logging.getLogger("llmgine")
        self._saved_level = llmgine_logger.level
        # Records below the level are never created; the store handler gets the rest, whatever
        # the root logger's own level (tests run without setup_logging).
        llmgine_logger.setLevel(self.level)
        logging.getLogger().addHandler(self.handler)
        endpoint = self.settings["observability.otlp_endpoint"]
        if endpoint and self.tracing_enabled:
            from llmgine_daemon.observability.otel import make_exporter

            self._exporter = make_exporter(endpoint)
            if self._exporter is not None:
                self.tracer.exporters.append(self._exporter.export)
        self._task = asyncio.create_task(self._flusher(), name="llmgine-telemetry-flush")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        logging.getLogger().removeHandler(self.handler)
        try:
            await self.flush()
        except StorageError as exc:  # the database down: nothing more to do with them
            log.error("final telemetry flush failed: %s", exc)
        except Exception:  # the store may already be failing; nothing more to do with them
            log.exception("final telemetry flush failed")
        if self._saved_level is not None:
            logging.getLogger("llmgine").setLevel(self._saved_level)
        if self.store.on_commit == self._on_commit:
            self.store.on_commit = None
        if self._exporter is not None:
            await asyncio.to_thread(self._exporter.shutdown)  # flushes over the network
        metrics.uninstall(self.registry)
        tracing.uninstall(self.tracer)

    # -- flushing ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every buffered log record and span now; returns after they committed."""
        async with self._flush_lock:
            records = self.handler.drain()
            spans = self.tracer.drain()
            if not records and not spans:
                return
            span_rows, session_rows = self.span_rows, self.session_log_rows
            log_rows, over = self._trims(records)
            session_span_rows = self.session_span_rows
            sessions = [span[10] for span in spans]  # a SpanRow's session
            spans_over = _over(sessions, self._spans_unchecked, session_span_rows)
            span_rows = self._span_rows_now(len(spans))

            def write(conn: sqlite3.Connection) -> None:
                if records:
                    insert_logs(conn, records, log_rows, over, session_rows)
                if spans:
                    insert_spans(conn, spans, span_rows, spans_over, session_span_rows)

            try:
                await self._untraced_write(write)
            except Exception:  # not written, and not kept: counted as dropped
                if records:
                    metrics.inc("telemetry_dropped_total", len(records), kind="log")
                if spans:
                    metrics.inc("telemetry_dropped_total", len(spans), kind="span")
                raise

    def _trims(self, records: list[LogRecord]) -> tuple[int, list[str]]:
        """What writing ``records`` trims: the whole table to ``log_rows`` once per hundredth
        of it written (0: not this time; rows are counted, a walk of the table's index, so
        not at every flush), and the sessions of ``_sessions_to_trim``."""
        self._since_trim += len(records)
        rows = 0
        if self.log_rows and self._since_trim >= max(1, self.log_rows // 100):
            rows, self._since_trim = self.log_rows, 0
        return rows, self._sessions_to_trim(records)

    def _span_rows_now(self, written: int) -> int:
        """``trace_retention_spans`` for this flush's spans: at every flush while the table is
        trimmed by id; counted (sessions' trims leave gaps in the ids: session_span_rows) once
        per hundredth of it written, 0 the other times."""
        if not self.session_span_rows:
            return self.span_rows
        self._spans_since_trim += written
        if self.span_rows and self._spans_since_trim >= max(1, self.span_rows // 100):
            self._spans_since_trim = 0
            return self.span_rows
        return 0

    def _sessions_to_trim(self, records: list[LogRecord]) -> list[str]:
        """The sessions of ``records`` that wrote a tenth of ``session_log_rows`` since they
        were last trimmed (counting every record would cost a look per session per flush)."""
        return _over([r.session_id for r in records], self._unchecked, self.session_log_rows)

    async def store_log(self, record: LogRecord) -> int:
        """Write one record now (POST /api/observability/logs); returns its id.

        Buffered records go first in the same transaction, so ids stay in time order.
        """
        async with self._flush_lock:
            records = [*self.handler.drain(), record]
            session_rows = self.session_log_rows
            rows, over = self._trims(records)

            def write(conn: sqlite3.Connection) -> int:
                return insert_logs(conn, records, rows, over, session_rows)[-1]

            return await self.telemetry.write(write)

    async def _flusher(self) -> None:
        failed, since = 0, 0.0  # flushes failed in a row, and when the first of them did
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Said once per outage (it was twice a second, bare on stdout, while a database
                # was down), and never buffered itself (``lg_stored``): it would fail the same way.
                if not failed:
                    since = time.monotonic()
                    log.error(
                        "telemetry flush failed: %s (further failures are counted until a flush succeeds)",
                        exc,
                        extra=_NOT_STORED,
                    )
                failed += 1
            else:
                if failed:
                    log.warning("telemetry flushes again, after %d failed in %.1f s", failed, time.monotonic() - since)
                    failed = 0

    async def _untraced_write(self, fn: Any) -> None:
        # Telemetry's own writes must not produce storage spans (nor feed back into a trace).
        token = CURRENT_SPAN.set(None)
        try:
            # Thousands of spans: in the telemetry store's thread, one statement (insert_spans).
            await self.telemetry.write(fn, heavy=True)
        finally:
            CURRENT_SPAN.reset(token)

    def http_metrics(self, route: str, method: str, status: int) -> tuple[metrics.BoundCounter, metrics.BoundHistogram]:
        """The request counter and latency histogram of one route, method and status, bound on
        first use (routes are templates, so there are few of them; the registry's series bound
        still applies)."""
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.registry.counter("http_requests_total", route=route, method=method, status=status),
                self.registry.histogram("http_request_duration_seconds", route=route, method=method),
            )
        return children

    def not_sampled_message(self, trace_id: str) -> str | None:
        """Why ``trace_id`` has no stored spans, when the reason is sampling (else None)."""
        if not self.tracing_enabled or self.tracer.sampled(trace_id):
            return None
        slow = f"slower than {self.slow_span_ms:g} ms" if self.slow_span_ms else ""
        kept = "failed spans" + (f" and spans {slow}" if slow else "")
        return (
            f"trace {trace_id} was not sampled: spans are stored for {self.sample_rate * 100:g}% of traces"
            f" (observability.trace_sample_rate, LLMGINE_TRACE_SAMPLE_RATE=1 stores every trace),"
            f" plus {kept} (observability.slow_span_ms), and this trace had none"
        )

    # -- storage hook ------------------------------------------------------------------------

    def _on_commit(
        self,
        contexts: list[contextvars.Context],
        size: int,
        start: float,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        if self.metrics_enabled:
            (self._commit_error if error else self._commit_ok).inc()
            self._writes.inc(size)
            self._batch_size.observe(size)
            self._commit_seconds.observe(seconds)
        if not self.tracing_enabled:
            return
        # One span per traced caller in the batch, under the span that asked for the write
        # (for a caller in an unsampled trace, only when the commit failed or was slow).
        keep_all = error is not None or seconds * 1000 >= self.tracer.slow_span_ms
        seen: set[str] = set()
        for ctx in contexts:
            parent: Span | None = ctx.get(CURRENT_SPAN)
            if parent is None or not parent.recording or parent.span_id in seen:
                continue
            if not (parent.sampled or keep_all):
                continue
            seen.add(parent.span_id)
            self.tracer.record(
                "store.commit",
                parent,
                start,
                seconds * 1000,
                error=str(error) if error else None,
                batch_size=size,
            )


def _over(session_ids: list[str | None], unchecked: dict[str, int], cap: int) -> list[str]:
    """The sessions among ``session_ids`` (one per record or span written) that wrote a tenth
    of ``cap`` since they were last trimmed to it; ``unchecked`` counts what each wrote since."""
    if not cap or not session_ids:
        return []
    step = max(1, cap // 10)
    over = []
    for session_id in session_ids:
        if session_id is not None:
            count = unchecked[session_id] = unchecked.get(session_id, 0) + 1
            if count == step:
                over.append(session_id)
    for session_id in over:
        del unchecked[session_id]
    if len(unchecked) > 10_000:  # sessions that write little: forget them (trimmed later)
        unchecked.clear()
    return over
