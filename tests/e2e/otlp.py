"""An OTLP/HTTP receiver in the test process: the services export their spans and metrics to
it (``OTEL_EXPORTER_OTLP_ENDPOINT``), it decodes each ``ExportTraceServiceRequest`` and
``ExportMetricsServiceRequest`` with the OpenTelemetry project's own protobuf classes
(opentelemetry-proto) and keeps the spans, and the metrics' last data points."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    service: str
    scope: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link


def _value(any_value: Any) -> Any:
    return (
        getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None
    )


class Receiver:
    """``POST /v1/traces``: every span received, in arrival order; ``POST /v1/metrics``: each
    (service, metric name) with its data points of the last export."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/traces":
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver.take_metrics(ExportMetricsServiceRequest.FromString(body))
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(Span(
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), name=span.name, kind=span.kind,
                        service=str(resource.get("service.name")), scope=scope_spans.scope.name,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        links=tuple((k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                    ))  # fmt: skip
        with self.lock:
            self.spans.extend(found)

    def take_metrics(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            for resource_metrics in request.resource_metrics:
                attributes = resource_metrics.resource.attributes
                service = str({a.key: _value(a.value) for a in attributes}.get("service.name"))
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        self.metrics[(service, metric.name)] = metric

    def points(self, service: str, name: str) -> list[tuple[dict[str, Any], Any]]:
        """The data points of a metric's last export: (attributes, the point)."""
        with self.lock:
            metric = self.metrics.get((service, name))
        which = metric.WhichOneof("data") if metric is not None else None
        if which is None:
            return []
        data = getattr(metric, which)
        return [({a.key: _value(a.value) for a in p.attributes}, p) for p in data.data_points]

    def in_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
