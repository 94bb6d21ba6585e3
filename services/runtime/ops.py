"""What an operator watches: liveness, readiness and Prometheus metrics of one process's services.

``approvals serve`` answers on ``APPROVALS_OPS_HOST``:``APPROVALS_OPS_PORT`` (0: off):

- ``GET /healthz``: 200 while the process's event loop turns (a liveness probe);
- ``GET /readyz``: 200 when every service of the process has started, its NATS connection is
  up and its store or view answers; 503 otherwise; the body says which is not (JSON);
- ``GET /metrics``: the metrics below in Prometheus's text format. Lags are read when scraped.

The metrics live in prometheus_client's default registry: one set per process, whichever of the
services it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from litestar import Litestar, MediaType, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from approvals.schemas.codec import encoder
from approvals.services.runtime.http import Served

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)

# No `_created` series beside every counter (nothing reads them); the function is unannotated.
cast("Callable[[], None]", disable_created_metrics)()

COMMANDS = Counter(
    "approvals_commands",
    "Commands the command service answered, by verb (request, approve, reject, ...) and outcome "
    "(the reply's outcome, or the error's code).",
    ["verb", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "approvals_command_seconds",
    "From a command's arrival to its answer, decided and stored, by verb.",
    ["verb"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONSUMED = Counter(
    "approvals_consumer_events",
    "Events a durable consumer handled, by consumer and outcome (done; deferred: handed back "
    "for later by design; retried: the bus or a service failed; set_aside: cannot be handled).",
    ["consumer", "outcome"],
)
DELIVERIES = Counter(
    "approvals_deliveries",
    "Sends to a reviewer's channel, by channel kind and outcome (delivered, retried, failed).",
    ["channel", "outcome"],
)
CONSUMER_LAG = Gauge(
    "approvals_consumer_lag_events",
    "Events on the stream a durable consumer has not acknowledged yet (waiting and in flight).",
    ["consumer"],
)
# The two lags below count store positions (notification ids), not events: positions have gaps
# where an insert was rolled back (two command instances racing), so a lag can exceed the
# events behind by those; it is 0 exactly when caught up.
PROJECTION_LAG = Gauge(
    "approvals_projection_lag_events",
    "The position of the stream's last event minus the last one the status view applied.",
)
RELAY_LAG = Gauge(
    "approvals_relay_lag_events",
    "The position of the store's last event minus the last one the relay put on the stream.",
)
LEASE_HELD = Gauge("approvals_relay_lease_held", "1 while this instance publishes the log.")
READY = Gauge("approvals_ready", "1 while the service is ready.", ["service"])

# What approval owners ask (docs/observability.md). Counted by the command service as it stores
# each event (exactly once per event), except the pending gauges, which the status projection
# reads from its view when scraped.
DECISION_SECONDS = Histogram(
    "approvals_decision_seconds",
    "From a request to its decision, by workspace, risk level and outcome (approved, rejected, "
    "expired, cancelled).",
    ["workspace", "risk", "outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400),
)
PENDING = Gauge(
    "approvals_pending", "Approvals waiting for a decision, by workspace.", ["workspace"]
)
OLDEST_PENDING = Gauge(
    "approvals_oldest_pending_seconds",
    "Age of the oldest approval still waiting for a decision, by workspace (0: none waits).",
    ["workspace"],
)
EXPIRIES = Counter(
    "approvals_expiries", "Approvals that expired undecided, by workspace and risk level.",
    ["workspace", "risk"],
)  # fmt: skip
REMINDERS = Counter("approvals_reminders", "Reminders sent to approvers, by workspace.",
                    ["workspace"])  # fmt: skip
ESCALATIONS = Counter("approvals_escalations", "Approvals escalated, by workspace.", ["workspace"])
REDEMPTIONS = Counter(
    "approvals_redemptions",
    "Redeem commands, by workspace and outcome (redeemed, or the refusal's code).",
    ["workspace", "outcome"],
)
CREDITS_RESERVED = Counter(
    "approvals_credits_reserved",
    "Credits held against the workspace's cap when an approval with a ceiling is approved.",
    ["workspace"],
)
CREDITS_USED = Counter(
    "approvals_credits_used", "Credits runs reported using, by workspace.", ["workspace"]
)
BUDGET_CAP = Gauge(
    "approvals_budget_cap_credits",
    "The workspace's budget cap for the period, as the last spend check saw it.",
    ["workspace"],
)
BUDGET_COMMITTED = Gauge(
    "approvals_budget_committed_credits",
    "Credits committed against the cap in the period, as the last spend check saw it.",
    ["workspace"],
)


@runtime_checkable
class Probed(Protocol):
    """A service the ops endpoints ask: ready or not (and it refreshes its lag gauges)."""

    name: str

    async def ready(self) -> bool: ...


PROBE_TIMEOUT_S = 5.0


class Ops(Served):
    """The ops endpoints of the services run in this process."""

    name = "ops"

    def __init__(self, settings: Settings, services: Sequence[object]) -> None:
        self.services = [s for s in services if isinstance(s, Probed)]
        self.started = False  # set by ``approvals serve`` once every service has started
        super().__init__(self._app(), settings.ops_host, settings.ops_port)

    async def readiness(self) -> dict[str, bool]:
        """Every service's readiness, asked at once, each within PROBE_TIMEOUT_S."""

        async def probe(service: Probed) -> bool:
            ok = False
            with contextlib.suppress(Exception):
                ok = self.started and await asyncio.wait_for(service.ready(), PROBE_TIMEOUT_S)
            READY.labels(service.name).set(1 if ok else 0)
            return ok

        answers = await asyncio.gather(*(probe(s) for s in self.services))
        return {s.name: ok for s, ok in zip(self.services, answers, strict=True)}

    def _app(self) -> Litestar:
        @get("/healthz", media_type=MediaType.TEXT)
        async def healthz() -> str:
            return "ok"

        @get("/readyz")
        async def readyz() -> Response[bytes]:
            services = await self.readiness()
            ready = self.started and all(services.values())
            body = encoder.encode({"ready": ready, "started": self.started, "services": services})
            return Response(body, status_code=200 if ready else 503,
                            media_type=MediaType.JSON)  # fmt: skip

        @get("/metrics")
        async def metrics() -> Response[bytes]:
            await self.readiness()  # refreshes the lags and readiness gauges
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return Litestar(route_handlers=[healthz, readyz, metrics], openapi_config=None)


def counted(verb: str, outcome: str, started: float | None, now: float) -> None:
    """One answered command: its count, and its time from arrival when it was queued."""
    COMMANDS.labels(verb, outcome).inc()
    if started is not None:
        COMMAND_SECONDS.labels(verb).observe(now - started)


def families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric this module defines: name -> (type, label names). The one list the docs
    and the Grafana dashboard are checked against (tests/unit/test_observability.py)."""
    return {
        metric._name: (str(metric._type), tuple(metric._labelnames))
        for metric in globals().values()
        if isinstance(metric, MetricWrapperBase)
    }


SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def series() -> dict[str, tuple[str, ...]]:
    """Every series name ``/metrics`` exports (``approvals_commands_total``,
    ``approvals_decision_seconds_bucket``, ...) with its labels."""
    return {
        name + suffix: labels + (("le",) if suffix == "_bucket" else ())
        for name, (kind, labels) in families().items()
        for suffix in SUFFIXES[kind]
    }


def lag_of(info: Any) -> int:
    """A consumer's lag from its ``ConsumerInfo``: waiting plus delivered but unacknowledged."""
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
