"""The caller's trace context, sent with each command and query (the ``otel`` extra).

With ``opentelemetry-api`` installed (``pip install 'approvals-client[otel]'``), the client adds
the current span's W3C ``traceparent`` (and whatever else the configured propagators carry) to
the NATS headers and HTTP headers of what it sends, so the service continues the caller's trace.
Without it, or outside any span, nothing is added and nothing is imported beyond this module.
"""

from __future__ import annotations

try:
    from opentelemetry import propagate
except ImportError:  # the extra is not installed: nothing to carry
    propagate = None  # type: ignore[assignment]


def trace_headers() -> dict[str, str] | None:
    """The current context's propagation headers, or None when there is nothing to send."""
    if propagate is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None
