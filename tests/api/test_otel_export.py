"""With the otel extra and an OTLP endpoint, spans also reach a collector, same ids."""

from __future__ import annotations

import http.server
import threading

# The otel extra is in the test extra: a missing package fails here, it is not skipped.
import opentelemetry.exporter.otlp.proto.http  # noqa: E402, F401
import opentelemetry.sdk  # noqa: E402, F401
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from tests.conftest import authorize  # noqa: E402

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def collector():
    """A minimal OTLP/HTTP collector in a thread (the SDK exports from its own thread)."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


async def test_spans_exported_over_otlp(make_settings, aiohttp_client, collector):
    from llmgine_daemon.app import create_app

    url, received = collector
    # Over TCP, with the local CLI's key like every other request (authorize).
    client = authorize(await aiohttp_client(create_app(make_settings(OTEL_EXPORTER_OTLP_ENDPOINT=url))))
    resp = await client.post(
        "/api/sessions", json={}, headers={"traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"}
    )
    assert resp.status == 201
    await client.close()  # app cleanup shuts the exporter down, which flushes it
    spans = [
        span for request in received for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
    ]
    names = {span.name for span in spans if span.trace_id.hex() == CLIENT_TRACE}
    assert {"POST /api/sessions", "store.commit"} <= names
