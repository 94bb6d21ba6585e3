"""One approval's whole story from the event store: who asked, who was told, who decided what,
through which door, and what the run used (with the budget and standing-rule events naming it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from approvals.schemas import events
from approvals.schemas.audit import History, HistoryEntry
from approvals.schemas.codec import event_decoder
from approvals.services.approvals import budget, governance
from approvals.services.audit.source import aggregate_records

if TYPE_CHECKING:
    from uuid import UUID

    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.notification_log import Record


def history(app: Approvals, approval_id: UUID) -> History | None:
    """None when the store holds no such approval."""
    own = aggregate_records(app, approval_id)
    if not own:
        return None
    entries = [_entry(r, "approval") for r in own]
    first = event_decoder.decode(own[0].state)
    workspace = first.workspace_id
    for record in own:
        event = event_decoder.decode(record.state)
        related: list[tuple[Any, Literal["budget", "allowance"]]] = []
        if isinstance(event, events.Approved) and event.budget_period:
            related.append((budget.budget_key(workspace, event.budget_period), "budget"))
        if isinstance(event, events.Approved) and event.actor.startswith("policy:"):
            rule, day = event.actor.removeprefix("policy:"), event.occurred_at.date().isoformat()
            related.append((governance.allowance_key(workspace, rule, day), "allowance"))
        for key, kind in related:
            entries += [
                _entry(r, kind)
                for r in aggregate_records(app, key)
                if getattr(event_decoder.decode(r.state), "approval_id", None) == approval_id
            ]
    entries.sort(key=lambda e: e.position)
    return History(approval_id=approval_id, workspace_id=workspace, entries=entries)


def _entry(record: Record, aggregate: Literal["approval", "budget", "allowance"]) -> HistoryEntry:
    event = event_decoder.decode(record.state)
    return HistoryEntry(
        position=record.id,
        aggregate=aggregate,
        version=event.version,
        type=event.event_type,
        occurred_at=event.occurred_at,
        actor=event.actor,
        via=event.via,
        digest=getattr(event, "digest", None),
        detail=detail(event),
        schema_version=event.schema_version,
        hash=event.hash,
        event=msgspec.json.decode(record.state),
    )


def _credits(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def detail(event: events.AnyEvent) -> str:
    """What a person needs to see of an event at a glance."""
    match event:
        case events.Requested():
            action = event.action
            return (
                f"{event.title!r}: {action.kind} {action.provider or ''} ({action.mode}), "
                f"max {_credits(action.max_credits)} credits, {event.risk_level} risk, "
                f"quorum {event.quorum}, by {event.requested_by}"
                + (f" for {event.on_behalf_of}" if event.on_behalf_of else "")
            )
        case events.SpendChecked():
            s = event.spend
            if s.cap is None:
                return "no budget applies"
            return (
                f"budget {s.period}: {_credits(s.committed)} of {_credits(s.cap)} committed, "
                f"{_credits(s.remaining)} left; {'fits' if s.fits else 'does not fit now'}"
            )
        case events.Delivered():
            return f"to {event.channel} ({event.target})"
        case events.DeliveryFailed():
            return f"{event.channel} ({event.target}) failed after {event.attempts}: {event.error}"
        case events.Reminded():
            return f"reminder {event.count}"
        case events.Escalated():
            return f"escalated to {event.group}"
        case events.VoteCast():
            return f"vote of {event.for_member or event.voter} (signed as {event.signed_as})" + (
                f": {event.reason}" if event.reason else ""
            )
        case events.Approved():
            votes = ", ".join(event.votes) or event.actor
            return (
                f"approved by {votes}"
                + (f": {event.reason}" if event.reason else "")
                + (f"; receipt key {event.receipt.key_id}" if event.receipt else "")
            )
        case events.Rejected():
            return (
                "rejected"
                + (f": {event.reason}" if event.reason else "")
                + ("; may run again" if event.rerun else "")
            )
        case events.Responded():
            return f"answered instead of deciding: {event.message}"
        case events.Expired():
            return "nobody decided before the deadline"
        case events.Cancelled():
            return "cancelled" + (f": {event.reason}" if event.reason else "")
        case events.Redeemed():
            return f"started by {event.executor}"
        case events.RunReported():
            return (
                f"{event.outcome}: used {_credits(event.credits_used)} credits"
                + (" (over the ceiling)" if event.over_ceiling else "")
                + (f"; {event.summary}" if event.summary else "")
            )
        case events.CreditsReserved():
            return (
                f"reserved {_credits(event.credits)} in {event.period}: "
                f"{_credits(event.committed)} of {_credits(event.cap)} committed"
            )
        case events.CreditsSettled():
            return (
                f"settled {_credits(event.used)} used of {_credits(event.reserved)} reserved "
                f"in {event.period}: {_credits(event.committed)} of {_credits(event.cap)}"
            )
        case events.CreditsReleased():
            return (
                f"released {_credits(event.credits)} unredeemed in {event.period}: "
                f"{_credits(event.committed)} of {_credits(event.cap)} committed"
            )
        case events.StandingUsed():
            return (
                f"standing rule {event.rule}: {_credits(event.credits)} credits, "
                f"{_credits(event.total)} on {event.day}"
            )
    return event.event_type
