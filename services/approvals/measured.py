"""The approval metrics the command service counts as it answers (``ops`` defines them).

Counted here because the command service stores each event exactly once: a decision, an expiry,
a reminder or a redemption is counted when it is committed, never again on a redelivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from approvals.services.approvals.errors import ApprovalError
from approvals.services.runtime import ops

if TYPE_CHECKING:
    from approvals.services.approvals.application import Result

DECISIONS = frozenset({"approved", "rejected", "expired", "cancelled"})


def handled(verb: str, workspace_id: str, result: Result | ApprovalError) -> None:
    """Count what one command's result tells (nothing for a replay)."""
    if isinstance(result, ApprovalError):
        if verb == "redeem":
            ops.REDEMPTIONS.labels(workspace_id, result.code).inc()
        return
    approval = result.approval
    if approval is None or result.replayed:
        return
    workspace, outcome = approval.workspace_id, result.outcome
    if verb != "request" and outcome in DECISIONS and approval.resolved_at is not None:
        waited = (approval.resolved_at - approval.request.occurred_at).total_seconds()
        ops.DECISION_SECONDS.labels(workspace, approval.request.risk_level, outcome).observe(
            max(0.0, waited)
        )
    if outcome == "expired":
        ops.EXPIRIES.labels(workspace, approval.request.risk_level).inc()
    elif outcome == "reminded":
        ops.REMINDERS.labels(workspace).inc()
    elif outcome == "escalated":
        ops.ESCALATIONS.labels(workspace).inc()
    elif outcome == "redeemed":
        ops.REDEMPTIONS.labels(workspace, outcome).inc()
    elif outcome == "run_reported" and approval.run is not None:
        ops.CREDITS_USED.labels(workspace).inc(approval.run.credits_used)
    elif outcome == "spend_checked" and approval.spend is not None:
        spend = approval.spend.spend
        if spend.cap is not None and spend.committed is not None:
            ops.BUDGET_CAP.labels(workspace).set(spend.cap)
            ops.BUDGET_COMMITTED.labels(workspace).set(spend.committed)
    if outcome == "approved" and approval.budget_period is not None:
        ceiling = approval.current.action.max_credits
        if ceiling:
            ops.CREDITS_RESERVED.labels(workspace).inc(ceiling)
