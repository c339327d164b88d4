"""Structured logs, metrics and traces (spec section 7).

- ``context``   contextvars: session/command/engine/request ids and the current span
- ``logs``      structured records: formatters, the buffering store handler, log SQL
- ``metrics``   the metric catalog and registry; ``metrics.inc/observe/gauge_*`` for everyone
- ``metrics_view``  the JSON snapshot, per-session figures, Prometheus text
- ``tracing``   spans, W3C traceparent; ``tracing.span(...)`` for everyone
- ``traces``    span SQL: store, tree, list
- ``otel``      optional OTLP export through the OpenTelemetry SDK
- ``core``      ``Observability``: owns all of the above for one daemon, flushes to SQLite

Imports only the standard library, msgspec, ``protocol``, ``settings`` and ``store``: the bus,
engines and sandbox import it, never the other way round.
"""
