"""Traces: OpenTelemetry, off unless an OTLP endpoint is configured.

``configure`` (called once per process by ``approvals serve`` and ``approvals dev``) installs the
SDK's tracer provider with the OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and neither ``OTEL_SDK_DISABLED=true`` nor
``OTEL_TRACES_EXPORTER=none``); every other standard ``OTEL_*`` variable (service name, resource
attributes, sampler, batch processor, headers) is read by the SDK itself. Otherwise nothing is
installed and ``ENABLED`` stays False: the hot paths test that one flag and do nothing more.

One approval is one trace. Its id is ``trace_of(request.trace_id)``: a 32-hex W3C trace id as it
is, any other string hashed (SHA-256, first 16 bytes) so the same ``trace_id`` always names the
same trace. The command service's span for the ``request`` has the span id ``anchor(approval_id)``,
so any process can parent a later span of the approval to it from the stored events alone
(``approval_context``), after a restart or a redelivery as well.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from approvals.services.runtime import metrics_export

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from uuid import UUID

    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

EVENT_TEMPLATE = "approvals.events.{workspace}.{approval_id}.{type}"
MSG_ID = "Nats-Msg-Id"

ENABLED = False  # True once ``configure`` installed a provider: the hot paths' only check
_provider: TracerProvider | None = None

_HEX32 = re.compile(r"[0-9a-f]{32}")
_MASK64 = (1 << 64) - 1

# The ids the next span started in this context must take (see ``_Ids``), else random ones.
_wanted_trace: ContextVar[int | None] = ContextVar("approvals_wanted_trace", default=None)
_wanted_span: ContextVar[int | None] = ContextVar("approvals_wanted_span", default=None)


class _Ids(RandomIdGenerator):
    """Random ids, except where the caller asked for given ones (``start_span``)."""

    def generate_span_id(self) -> int:
        return _wanted_span.get() or super().generate_span_id()

    def generate_trace_id(self) -> int:
        return _wanted_trace.get() or super().generate_trace_id()


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(service_name: str = "approvals") -> bool:
    """Install the SDK's provider with the OTLP/HTTP exporter if the environment asks for it,
    and send the metrics over OTLP as well (``metrics_export``)."""
    global ENABLED, _provider
    if ENABLED or not (wanted(os.environ) or metrics_export.wanted(os.environ)):
        return ENABLED
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    metrics_export.start(resource)
    if not wanted(os.environ):
        return False
    _provider = TracerProvider(resource=resource, id_generator=_Ids())
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    # Every HTTP call made with httpx (webhooks, resume callbacks, chat APIs) is a client span
    # whose traceparent goes to the receiver.
    HTTPXClientInstrumentor().instrument(tracer_provider=_provider)
    ENABLED = True
    log.info("tracing on: spans go to the OTLP endpoint")
    return True


def shutdown() -> None:
    """Export what is buffered (the process is stopping)."""
    metrics_export.stop()
    if _provider is not None:
        _provider.shutdown()


@functools.cache
def tracer(name: str) -> trace.Tracer:
    """One tracer per scope (the SDK builds a new one on each ``get_tracer``)."""
    return trace.get_tracer(name)


def trace_of(trace_id: str | None) -> int | None:
    """The trace an approval's stored ``trace_id`` names (see the module's docstring)."""
    if not trace_id:
        return None
    if _HEX32.fullmatch(trace_id) and int(trace_id, 16):
        return int(trace_id, 16)
    return int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:16], "big") or None


def anchor(approval_id: UUID) -> int:
    """The span id of the command service's span for an approval's request."""
    return (approval_id.int & _MASK64) or 1


def approval_context(trace_id: str | None, approval_id: UUID) -> Context | None:
    """A context whose parent is the approval's request span, or None when it has no trace."""
    trace_int = trace_of(trace_id)
    if trace_int is None:
        return None
    parent = SpanContext(trace_int, anchor(approval_id), is_remote=True,
                         trace_flags=_sampled(trace_int))  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _sampled(trace_int: int) -> TraceFlags:
    """Whether the configured sampler keeps the trace: asked as for its root span, so a ratio
    sampler (``parentbased_traceidratio``) decides alike for every span of an approval."""
    if _provider is None:
        return TraceFlags(TraceFlags.SAMPLED)
    decision = _provider.sampler.should_sample(None, trace_int, "approval").decision
    kept = decision is Decision.RECORD_AND_SAMPLE
    return TraceFlags(TraceFlags.SAMPLED if kept else TraceFlags.DEFAULT)


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The caller's context from W3C ``traceparent`` headers, or None when there is none."""
    if not headers or "traceparent" not in headers:
        return None
    found = propagate.extract(headers)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def trace_id_of(context: Context | None) -> int | None:
    if context is None:
        return None
    found = trace.get_current_span(context).get_span_context()
    return found.trace_id if found.is_valid else None


def inject(headers: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """``headers`` with the current (or the given) span's ``traceparent`` added."""
    propagate.inject(headers, context=context)
    return headers


def start_span(
    name: str,
    scope: str,
    *,
    context: Context | None = None,
    trace_id: int | None = None,
    span_id: int | None = None,
    **options: Any,
) -> trace.Span:
    """A span, started with the ids asked for (a root span in ``trace_id``; ``span_id`` its own)
    where given. ``options`` are ``Tracer.start_span``'s (kind, attributes, links, start_time)."""
    trace_token = _wanted_trace.set(trace_id) if trace_id else None
    span_token = _wanted_span.set(span_id) if span_id else None
    try:
        return tracer(scope).start_span(name, context=context, **options)
    finally:
        if trace_token is not None:
            _wanted_trace.reset(trace_token)
        if span_token is not None:
            _wanted_span.reset(span_token)


def messaging(operation: str, subject: str, template: str, **extra: Any) -> dict[str, Any]:
    """The OpenTelemetry messaging attributes of a NATS span."""
    return {
        "messaging.system": "nats",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": subject,
        "messaging.destination.template": template,
        **extra,
    }


@contextlib.contextmanager
def consuming(
    headers: Mapping[str, str] | None, subject: str, consumer: str, scope: str
) -> Iterator[trace.Span | None]:
    """The current span while a consumer handles one event: a child of the publish span whose
    ``traceparent`` the message carries (None, and no span, for a message outside any trace)."""
    parent = extract(headers)
    if parent is None:
        yield None
        return
    assert headers is not None
    attributes = messaging("process", subject, EVENT_TEMPLATE, **{
        "messaging.consumer.group.name": consumer,
        "messaging.message.id": headers.get(MSG_ID, ""),
    })  # fmt: skip
    with tracer(scope).start_as_current_span(
        f"process {consumer}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def batch_span(
    consumer: str, scope: str, messages: Sequence[tuple[str, Mapping[str, str] | None]]
) -> trace.Span | None:
    """A consumer's span for a batch of (subject, headers): a child of the one message's publish
    span, or for several, linked to each (the messaging conventions' batch processing)."""
    contexts = [(subject, c) for subject, h in messages if (c := extract(h)) is not None]
    if not contexts:
        return None
    attributes = messaging("process", contexts[0][0], EVENT_TEMPLATE, **{
        "messaging.consumer.group.name": consumer,
        "messaging.batch.message_count": len(messages),
    })  # fmt: skip
    if len(messages) == 1:
        return tracer(scope).start_span(f"process {consumer}", context=contexts[0][1],
                                        kind=SpanKind.CONSUMER, attributes=attributes)  # fmt: skip
    links = [Link(trace.get_current_span(c).get_span_context()) for _, c in contexts]
    return tracer(scope).start_span(f"process {consumer}", context=Context(), links=links,
                                    kind=SpanKind.CONSUMER, attributes=attributes)  # fmt: skip


def current(
    name: str, scope: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A span current in the block when tracing is on (a child of the current one); else none."""
    if not ENABLED:
        return contextlib.nullcontext()
    return tracer(scope).start_as_current_span(name, kind=kind, attributes=attributes)
