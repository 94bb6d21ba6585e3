"""What the integrations share: redeeming an approved call once and the message a model reads
when a call may not run (Pydantic AI, OpenAI Agents SDK), and what a decision handed back to
the caller's code answers (LangGraph, Temporal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from approvals.client.errors import ApprovalsError

if TYPE_CHECKING:
    from approvals.client.flow import Caller
    from approvals.schemas.commands import Action
    from approvals.schemas.queries import ApprovalView


class Outcome:
    """``approved`` and ``message`` of a decision handed back to the caller's code (a mixin of
    the LangGraph and Temporal ``Decision``: one a msgspec Struct, the other a dataclass)."""

    __slots__ = ()
    status: str
    reason: str | None

    @property
    def approved(self) -> bool:
        """The action may run (it was approved, or needed no approval)."""
        return self.status in ("approved", "not_required")

    @property
    def message(self) -> str | None:
        """The person's answer when they responded instead of deciding."""
        return self.reason if self.status == "responded" else None


async def redeem_once(
    client: Caller, approval: ApprovalView, action: Action, payload: Any, executor: str
) -> str | None:
    """None once ``action`` and ``payload`` are redeemed (single use); the model's message when
    the approval was used already, so a resumed or retried run never runs the call twice."""
    try:
        await client.redeem(approval.id, action=action, payload=payload, executor=executor)
    except ApprovalsError as error:
        if error.code != "already_redeemed":
            raise
        return (
            f"Approval {approval.id} was already used: this call ran (or started) once, and"
            " does not run again."
        )
    return None


def why_not(approval: ApprovalView) -> str:
    """The message the model reads in place of the tool's result."""
    by = f" by {approval.decided_by}" if approval.decided_by else ""
    if approval.status == "responded":
        return approval.reason or f"A person answered{by} instead of deciding."
    if approval.status == "rejected":
        again = " (they ask for a new, changed request)" if approval.rerun else ""
        return (approval.reason or f"Rejected{by}.") + again
    if approval.status == "expired":
        return "Nobody decided before the approval request expired; the tool did not run."
    why = f": {approval.reason}" if approval.reason else ""
    return f"The approval request was {approval.status}{by}{why}; the tool did not run."
