"""The spend-cap service: budget checks, released reservations and alerts, from the event stream.

Two durable JetStream consumers, shared by every instance (a deliver group):

- ``spendcap`` takes ``requested`` and the budget events. On ``requested`` it sends
  ``check_spend``: the command service records ``spend_checked`` with the budget picture, or
  rejects (as ``service:spendcap``) a request whose ceiling can never fit. On a budget event that
  takes committed credits to or past 80% or 100% of the cap it publishes a ``BudgetAlert`` on
  ``approvals.alerts.<workspace>.budget``.
- ``spendcap-deadlines`` takes ``approved``. An approval that holds credits is acknowledged only
  once its redemption deadline has passed: until then the message is handed back with a delay
  that ends at the deadline (the server keeps the timer, so a restart loses none), and at the
  deadline ``release`` gives the credits back unless the approval was redeemed. It has its own
  consumer so that approvals waiting for their deadline never hold up the checks.

Everything it does is idempotent at the command service (a second ``check_spend`` or
``release`` is refused and acknowledged), so a redelivery after a crash changes nothing.
Only a failure to reach the command service hands a message back, with a growing delay.

Settling a reservation when a run is reported happens in the command service, in the same
transaction as ``run_reported``; periods roll over by construction (one budget per period).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from approvals.schemas import events, subjects
from approvals.schemas.alerts import BudgetAlert
from approvals.schemas.codec import encoder
from approvals.services.runtime.consumer import ConsumerService, EventConsumers, command

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

ACTOR = "service:spendcap"
CHECKS = "spendcap"
DEADLINES = "spendcap-deadlines"
THRESHOLDS = (80, 100)


def crossed(before: float, after: float, cap: float) -> list[int]:
    """The thresholds (percent of ``cap``) that committed credits rose to or past."""
    if cap <= 0:
        return []
    return [t for t in THRESHOLDS if before < cap * t / 100 <= after]


def before_and_after(event: events.BudgetEvent) -> tuple[float, float]:
    """Committed credits before and after a budget event."""
    if isinstance(event, events.CreditsReserved):
        return event.committed - event.credits, event.committed
    if isinstance(event, events.CreditsSettled):
        return event.committed - event.used + event.reserved, event.committed
    return event.committed + event.credits, event.committed


def alerts_for(event: events.BudgetEvent) -> list[BudgetAlert]:
    before, after = before_and_after(event)
    return [
        BudgetAlert(
            alert_id=f"{event.event_id}:{threshold}",
            workspace_id=event.workspace_id,
            period=event.period,
            threshold=threshold,  # type: ignore[arg-type]
            committed=after,
            cap=event.cap,
            remaining=max(0.0, event.cap - after),
            percent_used=round(100 * after / event.cap, 2),
            approval_id=event.approval_id,
            cause=event.event_type,
            occurred_at=event.occurred_at,
        )
        for threshold in crossed(before, after, event.cap)
    ]


class SpendCap:
    def __init__(
        self,
        nc: Client,
        *,
        checks: str = CHECKS,
        deadlines: str = DEADLINES,
        concurrency: int = 64,
        ack_wait_s: float = 30.0,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self.nc = nc
        self.checks = checks
        self.deadlines = deadlines
        self.reply_timeout_s = reply_timeout_s
        self.consumers = EventConsumers(nc, concurrency=concurrency, ack_wait_s=ack_wait_s)

    async def start(self) -> None:
        kinds = ("requested", "credits_reserved", "credits_settled", "credits_released")
        await self.consumers.consume(self.checks, kinds, self.process, max_ack_pending=1000)
        # Every approval awaiting its deadline is a pending message here: room for many.
        await self.consumers.consume(self.deadlines, ("approved",), self.process,
                                     max_ack_pending=1_000_000)  # fmt: skip

    async def stop(self) -> None:
        await self.consumers.stop()

    async def process(self, event: events.AnyEvent, now: datetime | None = None) -> float | None:
        """Act on one event; None when it is done, else the seconds until it is due again."""
        if isinstance(event, events.Requested):
            await self._command(event.workspace_id, "check_spend", event.approval_id)
        elif isinstance(event, events.Approved):
            return await self._deadline(event, now or datetime.now(UTC))
        elif isinstance(event, events.CreditsReserved | events.CreditsSettled
                        | events.CreditsReleased):  # fmt: skip
            for alert in alerts_for(event):
                await self.nc.publish(
                    subjects.alerts(alert.workspace_id, "budget"),
                    encoder.encode(alert),
                    headers={subjects.MSG_ID_HEADER: alert.alert_id},
                )
        return None

    async def _deadline(self, event: events.Approved, now: datetime) -> float | None:
        if event.budget_period is None or event.redeem_by is None:
            return None  # it holds no credits
        if now < event.redeem_by:
            return (event.redeem_by - now).total_seconds()
        refused = await self._command(event.workspace_id, "release", event.approval_id)
        not_due = refused is not None and refused.get("rule") == "not_due"
        return 1.0 if not_due else None  # not_due: our clock ran ahead of the command service's

    async def _command(
        self, workspace_id: str, verb: subjects.CommandVerb, approval_id: Any
    ) -> dict[str, Any] | None:
        body = {"approval_id": approval_id, "by": ACTOR}
        return await command(self.nc, workspace_id, verb, body, self.reply_timeout_s)


class SpendCapService(ConsumerService):
    """The spend-cap service on its own connection."""

    name = "spendcap"

    def build(self, nc: Client) -> SpendCap:
        return SpendCap(nc, ack_wait_s=self.settings.ack_wait_s)
