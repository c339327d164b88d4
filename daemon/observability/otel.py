"""Optional OTLP export of finished spans through the OpenTelemetry SDK (the ``otel`` extra).

Our spans already have W3C ids, so they are handed to the SDK as ``ReadableSpan`` objects with
those ids (a collector shows the same trace ids as ``llmgine trace``), through the SDK's own
``BatchSpanProcessor`` - batching, retries and the background thread are the SDK's.
"""

from __future__ import annotations

import logging
from typing import Any

from llmgine_daemon import __version__
from llmgine_daemon.observability.tracing import Span

log = logging.getLogger("llmgine.observability.otel")

_KINDS = {
    "server": "SERVER",
    "client": "CLIENT",
    "internal": "INTERNAL",
    "producer": "PRODUCER",
    "consumer": "CONSUMER",
}


class OtlpExporter:
    def __init__(self, processor: Any, sdk: dict[str, Any]) -> None:
        self.processor = processor
        self.sdk = sdk

    def to_readable(self, span: Span) -> Any:
        trace_api, sdk_trace, resource = self.sdk["trace_api"], self.sdk["sdk_trace"], self.sdk["resource"]
        flags = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED if span.sampled else 0)
        context = trace_api.SpanContext(int(span.trace_id, 16), int(span.span_id, 16), False, flags)
        parent = (
            trace_api.SpanContext(int(span.trace_id, 16), int(span.parent_id, 16), span.local_root, flags)
            if span.parent_id
            else None
        )
        status = (
            trace_api.Status(trace_api.StatusCode.ERROR, span.error)
            if span.status == "error"
            else trace_api.Status(trace_api.StatusCode.OK)
        )
        start_ns = int(span.start * 1e9)
        return sdk_trace.ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=resource,
            attributes=dict(span.attributes),
            kind=getattr(trace_api.SpanKind, _KINDS.get(span.kind, "INTERNAL")),
            status=status,
            start_time=start_ns,
            end_time=start_ns + int((span.duration_ms or 0) * 1e6),
            instrumentation_scope=self.sdk["scope"],
        )

    def export(self, span: Span) -> None:
        self.processor.on_end(self.to_readable(span))

    def shutdown(self) -> None:
        self.processor.shutdown()


def make_exporter(endpoint: str) -> OtlpExporter | None:
    """An exporter to ``endpoint`` (OTLP over HTTP), or None when the extra is not installed."""
    try:
        from opentelemetry import trace as trace_api
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError:
        log.warning(
            "observability.otlp_endpoint is set but the OpenTelemetry SDK is not installed; "
            "install llmgine[otel] to export spans"
        )
        return None
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=url))
    sdk = {
        "trace_api": trace_api,
        "sdk_trace": sdk_trace,
        "resource": Resource.create({"service.name": "llmgined", "service.version": __version__}),
        "scope": InstrumentationScope("llmgine", __version__),
    }
    log.info("exporting spans over OTLP to %s", url)
    return OtlpExporter(processor, sdk)
