"""Pure folding of events into view rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from approvals.schemas import events
from approvals.schemas.queries import ApprovalView

if TYPE_CHECKING:
    from approvals.schemas.types import Status

_RESOLVED: dict[type[events.Event], Status] = {
    events.Approved: "approved",
    events.Rejected: "rejected",
    events.Expired: "expired",
    events.Cancelled: "cancelled",
    events.Responded: "responded",
}


def fold(row: ApprovalView | None, event: events.Event) -> ApprovalView | None:
    """The row after ``event``; an event the row already reflects changes nothing."""
    if isinstance(event, events.Requested):
        return row if row is not None else _requested(event)
    if row is None or event.version <= row.version:
        return row
    if isinstance(event, events.VoteCast):
        if event.action is not None:  # a new version: its votes start from this one
            row = msgspec.structs.replace(
                row, votes=(), approved_digest=event.digest, approved_action=event.action,
                approved_payload=event.proposed_payload, changes=event.changes,
            )  # fmt: skip
        votes = (*row.votes, event.for_member or event.voter)
        return msgspec.structs.replace(row, votes=votes, version=event.version)
    if isinstance(event, events.Redeemed):
        return msgspec.structs.replace(row, redeemed_at=event.occurred_at, version=event.version)
    if isinstance(event, events.SpendChecked):
        return msgspec.structs.replace(row, spend=event.spend, version=event.version)
    if isinstance(event, events.RunReported):
        return msgspec.structs.replace(row, credits_used=event.credits_used, version=event.version)
    if isinstance(event, events.Reminded):
        return msgspec.structs.replace(row, reminders=event.count, version=event.version)
    if isinstance(event, events.Escalated):
        return msgspec.structs.replace(row, escalated_to=event.group, version=event.version)
    if isinstance(event, events.DeliveryFailed):
        return msgspec.structs.replace(row, version=event.version)
    if isinstance(event, events.Delivered):
        channels = row.channels if event.channel in row.channels else (*row.channels, event.channel)
        return msgspec.structs.replace(row, channels=channels, version=event.version)
    if isinstance(event, events.Approved):
        edited = event.action is not None
        row = msgspec.structs.replace(
            row, votes=event.votes or row.votes, redeem_by=event.redeem_by, receipt=event.receipt,
            approved_digest=event.digest, changes=event.changes,
            approved_action=event.action if edited else row.action,
            approved_payload=event.proposed_payload if edited else row.proposed_payload,
        )  # fmt: skip
    return msgspec.structs.replace(
        row,
        status=_RESOLVED[type(event)],
        decided_by=event.actor,
        reason=event.message
        if isinstance(event, events.Responded)
        else getattr(event, "reason", None),
        rerun=getattr(event, "rerun", False),
        resolved_at=event.occurred_at,
        version=event.version,
    )


def _requested(event: events.Requested) -> ApprovalView:
    return ApprovalView(
        id=event.approval_id,
        workspace_id=event.workspace_id,
        status="pending",
        title=event.title,
        summary=event.summary,
        risk_level=event.risk_level,
        requested_by=event.requested_by,
        on_behalf_of=event.on_behalf_of,
        skill_name=event.skill_name,
        skill_execution_id=event.skill_execution_id,
        action_kind=event.action.kind,
        mode=event.action.mode,
        provider=event.action.provider,
        destination=event.action.destination,
        max_credits=event.action.max_credits,
        digest=event.digest,
        channels=(),
        decided_by=None,
        reason=None,
        created_at=event.occurred_at,
        expires_at=event.expires_at,
        resolved_at=None,
        version=event.version,
        quorum=event.quorum,
        action=event.action,
        proposed_payload=event.proposed_payload,
        payload_schema=event.payload_schema,
    )
