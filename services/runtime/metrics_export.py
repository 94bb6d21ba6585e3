"""The same metrics over OTLP: prometheus-client's registry, read and sent as OpenTelemetry
metrics, so ``/metrics`` and an OpenTelemetry collector see one set of numbers.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set and
``OTEL_METRICS_EXPORTER`` is not ``none``: every ``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds
(60,000) a thread reads the registry, turns each family into its OpenTelemetry form (a counter
into a cumulative monotonic sum, a gauge into a gauge, a histogram into a cumulative histogram
with the same bounds; the labels become attributes) and hands it to the SDK's OTLP/HTTP metric
exporter. The metrics keep their Prometheus names without the ``_total`` suffix.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import Metric, MetricsData
    from opentelemetry.sdk.resources import Resource

log = logging.getLogger(__name__)

_exporting: _Exporting | None = None


def wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def start(resource: Resource) -> None:
    """Export the registry periodically from now on (the environment permitting)."""
    global _exporting
    if _exporting is not None or not wanted(os.environ):
        return
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    interval_s = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000
    _exporting = _Exporting(OTLPMetricExporter(), resource, interval_s)
    _exporting.start()


def stop() -> None:
    """Send the registry once more, then stop (the process is stopping)."""
    global _exporting
    if _exporting is not None:
        _exporting.stop()
        _exporting = None


class _Exporting(threading.Thread):
    def __init__(self, exporter: OTLPMetricExporter, resource: Resource, interval_s: float):
        super().__init__(name="otlp-metrics", daemon=True)
        self.exporter, self.resource, self.interval_s = exporter, resource, interval_s
        self.started_ns = time.time_ns()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.send()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.send()
        self.exporter.shutdown()

    def send(self) -> None:
        try:
            self.exporter.export(metrics_data(self.resource, self.started_ns))
        except Exception:  # the next round tries again; the service goes on
            log.exception("exporting the metrics over OTLP failed")


def metrics_data(resource: Resource, started_ns: int) -> MetricsData:
    """prometheus-client's default registry as OpenTelemetry ``MetricsData``."""
    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    now = time.time_ns()
    metrics = [
        m for family in REGISTRY.collect()
        if family.samples and (m := _metric(family, started_ns, now))
    ]  # fmt: skip
    scope = ScopeMetrics(InstrumentationScope("approvals"), metrics, "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])


def _metric(family: Any, start_ns: int, now_ns: int) -> Metric | None:
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Metric,
        NumberDataPoint,
        Sum,
    )

    cumulative = AggregationTemporality.CUMULATIVE
    if family.type == "counter":
        points = [NumberDataPoint(s.labels, start_ns, now_ns, s.value)
                  for s in family.samples if s.name.endswith("_total")]  # fmt: skip
        data: Any = Sum(points, cumulative, is_monotonic=True)
    elif family.type == "gauge":
        data = Gauge([NumberDataPoint(s.labels, start_ns, now_ns, s.value) for s in family.samples])
    elif family.type == "histogram":
        data = _histogram(family, start_ns, now_ns)
    else:
        return None
    return Metric(family.name, family.documentation, None, data)


def _histogram(family: Any, start_ns: int, now_ns: int) -> Any:
    """Prometheus's cumulative ``le`` buckets as OpenTelemetry's per-bucket counts."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Histogram,
        HistogramDataPoint,
    )

    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in family.samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        found = series.setdefault(labels, {"buckets": []})
        if sample.name.endswith("_bucket"):
            found["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            found["count"] = sample.value
        elif sample.name.endswith("_sum"):
            found["sum"] = sample.value
    points = []
    for labels, found in series.items():
        buckets = sorted(found["buckets"])
        cumulative = [count for _, count in buckets]
        counts = [int(c - p) for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
        bounds = [bound for bound, _ in buckets if bound != float("inf")]
        points.append(HistogramDataPoint(
            dict(labels), start_ns, now_ns, int(found.get("count", 0)), found.get("sum", 0.0),
            counts, bounds, min=None, max=None,  # type: ignore[arg-type]  # Prometheus has none
        ))  # fmt: skip
    return Histogram(points, AggregationTemporality.CUMULATIVE)
