"""The Approval aggregate: decisions (state + command -> event) and evolution (state + event).

Pure: no I/O, no clock reads (``now`` is passed in), no bus. Decisions raise an ApprovalError
subclass when an invariant would break, and otherwise return the one event to store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import singledispatch
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

import msgspec

from approvals.schemas import events
from approvals.schemas.digest import action_differences, action_digest, payload_differs
from approvals.schemas.passkeys import SignedDecision
from approvals.schemas.receipts import Receipt
from approvals.schemas.replies import Delivery
from approvals.schemas.types import TERMINAL_STATUSES, Status
from approvals.services.approvals import (
    budget,
    edits,
    governance,
    grants,
    passkeys,
    payload_schemas,
)
from approvals.services.approvals.errors import (
    AlreadyDecided,
    AlreadyRedeemed,
    Conflict,
    DeadlinePassed,
    DigestMismatch,
    Invalid,
    NotApproved,
    SpendCapExceeded,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from approvals.schemas import commands
    from approvals.schemas.workspace import Reminders, StandingPermission
    from approvals.services.approvals.budget import Budget, Verdict
    from approvals.services.approvals.grants import Grant


E = TypeVar("E", bound=events.Event)


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    workspace_id: str
    status: Status
    request: events.Requested
    modified_at: datetime
    resolved_at: datetime | None = None
    deliveries: tuple[Delivery, ...] = ()
    decided_by: str | None = None
    reason: str | None = None
    votes: tuple[str, ...] = ()  # members who approved so far (one vote each)
    voters: tuple[str, ...] = ()  # the people who cast them (a delegate votes once in all)
    redeem_by: datetime | None = None  # approved: the action must start before this
    budget_period: str | None = None  # approved: the period whose budget holds its ceiling
    redeemed_by: str | None = None
    redeemed_at: datetime | None = None
    run: events.RunReported | None = None
    spend: events.SpendChecked | None = None  # the budget picture when the request came in
    receipt: Receipt | None = None  # approved: signed by the command service
    reminders: int = 0  # how many times the approvers were reminded
    escalated_to: str | None = None  # the group whose members may now decide it too
    rerun: bool = False  # rejected: the person asks the caller to prepare a new request
    # The edited version in force (an approver's proposal, or the approved edit); None: the
    # request as asked. ``votes``/``voters`` count toward this version only.
    proposal: events.VoteCast | events.Approved | None = None
    # The passkey assertions of ``votes``, where the workspace requires them (in vote order).
    signatures: tuple[SignedDecision, ...] = ()
    # The version of the last event that changed what is decided (the request, a vote, an
    # edit): a passkey may sign any version from it on (see passkeys.signed_version).
    settled_version: int = 1

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def current(self) -> edits.Version:
        """What would run: the version being voted on, or (approved) the one approved."""
        p = self.proposal
        if p is None or p.action is None:
            return edits.requested_version(self.request)
        return edits.Version(p.action, p.proposed_payload, p.digest, p.changes)


# -- decisions ------------------------------------------------------------------------------


def request(
    cmd: commands.Request,
    *,
    approval_id: UUID,
    workspace_id: str,
    now: datetime,
    default_expiry_s: int,
    quorum: int = 1,
    resume_signed: bool = False,
) -> events.Requested:
    expires_in = cmd.expires_in_s if cmd.expires_in_s is not None else default_expiry_s
    if cmd.resume_url is not None and not resume_signed:
        # An unsigned callback could be forged by anyone who learns the URL: refuse it.
        raise Invalid("resume_url needs a signing secret: name one in the workspace file's "
                      "[resume] table (secret = \"ENV_NAME\")", field="resume_url")  # fmt: skip
    if cmd.payload_schema is not None:
        payload_schemas.require_schema(cmd.payload_schema)
        payload_schemas.require_valid(cmd.payload_schema, cmd.proposed_payload, "proposed_payload")
    return events.Requested(
        event_id=uuid4(),
        approval_id=approval_id,
        version=1,
        workspace_id=workspace_id,
        occurred_at=now,
        actor=cmd.requested_by,
        trace_id=cmd.trace_id,
        requested_by=cmd.requested_by,
        skill_name=cmd.skill_name,
        skill_execution_id=cmd.skill_execution_id,
        title=cmd.title,
        summary=cmd.summary,
        risk_level=cmd.risk_level,
        action=cmd.action,
        digest=action_digest(cmd.action, cmd.proposed_payload),
        expires_at=now + timedelta(seconds=expires_in),
        idempotency_key=cmd.idempotency_key,
        on_behalf_of=cmd.on_behalf_of,
        proposed_payload=cmd.proposed_payload,
        quorum=quorum,
        payload_schema=cmd.payload_schema,
        resume_url=cmd.resume_url,
    )


def request_again(existing: Approval, cmd: commands.Request) -> None:
    """A request that reuses an idempotency key must name the same action."""
    digest = action_digest(cmd.action, cmd.proposed_payload)
    if digest != existing.request.digest:
        raise Conflict(
            "idempotency_key was already used for a different action",
            approval_id=str(existing.id),
            idempotency_key=cmd.idempotency_key,
            existing_digest=existing.request.digest,
            digest=digest,
        )


def approve(
    approval: Approval,
    cmd: commands.Approve,
    now: datetime,
    ws: governance.Workspace,
    credential: passkeys.Passkey | None = None,
) -> list[events.Event]:
    """A vote; the vote that meets the request's quorum is the ``approved`` event itself.

    ``cmd.digest`` names what the approver saw (the version being voted on); with ``edits`` the
    vote is for a narrower version instead: a new proposal, whose votes start from this one.
    Where the workspace requires a passkey, ``cmd.passkey`` must sign exactly this vote with
    ``credential`` (the one it names, as stored)."""
    _require_pending(approval, now)
    who = governance.decider(
        ws, cmd.approver, cmd.for_member, approval.request, now, approving=True,
        escalated_to=approval.escalated_to,
    )  # fmt: skip
    current = approval.current
    if cmd.digest != current.digest:
        raise DigestMismatch(
            "the digest shown to the approver is not the digest of the version being decided",
            expected=current.digest,
            given=cmd.digest,
        )
    target = current
    if cmd.edits is not None:
        edited = edits.edited_version(approval.request, cmd.edits)
        target = current if edited.digest == current.digest else edited
    proposes = target is not current
    votes, voters = ((), ()) if proposes else (approval.votes, approval.voters)
    # One person, one vote on a version: whichever name they sign with, and in whichever
    # capacity (a delegate who voted for someone cannot vote again as themselves, nor the
    # other way round).
    already = set(votes) | set(voters)
    if who.counted in already or who.member in already:
        raise Conflict(
            f"{who.member} has already voted on this version: one person, one vote",
            rule="one_vote_per_person",
            votes=list(votes),
        )
    votes = (*votes, who.counted)
    signed = passkeys.require(ws, approval, "approve", target.digest, who.member, cmd.passkey,
                              credential)  # fmt: skip
    version = _version_fields(target) if target.digest != approval.request.digest else {}
    if len(votes) < approval.request.quorum:
        vote = _next(
            approval, events.VoteCast, now, cmd.approver,
            voter=who.member, signed_as=cmd.approver, for_member=who.for_member,
            digest=target.digest, reason=cmd.reason, passkey=signed,
            **(_version_fields(target) if proposes else {}),
        )  # fmt: skip
        return [vote]
    signatures = () if proposes else approval.signatures
    signing = {"passkey": signed, "passkeys": (*signatures, signed)} if signed else {}
    return [
        _next(
            approval, events.Approved, now, cmd.approver,
            digest=target.digest, reason=cmd.reason, votes=votes, for_member=who.for_member,
            redeem_by=now + timedelta(seconds=ws.settings.redeem_within_s),
            requested_digest=approval.request.digest, **version, **signing,
        )
    ]  # fmt: skip


def _version_fields(version: edits.Version) -> dict[str, Any]:
    return {
        "action": version.action,
        "proposed_payload": version.proposed_payload,
        "changes": version.changes,
    }


def reject(
    approval: Approval,
    cmd: commands.Reject,
    now: datetime,
    ws: governance.Workspace,
    credential: passkeys.Passkey | None = None,
) -> events.Rejected:
    """One allowed rejection rejects (a veto), whatever votes came before. Where the workspace
    requires a passkey, ``cmd.passkey`` signs the rejection of the version being decided."""
    _require_pending(approval, now)
    who = governance.decider(
        ws, cmd.approver, cmd.for_member, approval.request, now, approving=False,
        escalated_to=approval.escalated_to,
    )  # fmt: skip
    signed = passkeys.require(ws, approval, "reject", approval.current.digest, who.member,
                              cmd.passkey, credential)  # fmt: skip
    return _next(
        approval, events.Rejected, now, cmd.approver,
        reason=cmd.reason, rerun=cmd.rerun, for_member=who.for_member, passkey=signed,
    )  # fmt: skip


def respond(
    approval: Approval, cmd: commands.Respond, now: datetime, ws: governance.Workspace
) -> events.Responded:
    """An answer instead of a decision ends the request, whatever votes came before. Only whoever
    may approve it may answer it (people, separation of duties): the requester cannot end its own
    request this way, which would read to it as a person's word."""
    _require_pending(approval, now)
    who = governance.decider(
        ws, cmd.approver, cmd.for_member, approval.request, now, approving=True,
        escalated_to=approval.escalated_to,
    )  # fmt: skip
    return _next(approval, events.Responded, now, cmd.approver, message=cmd.message,
                 for_member=who.for_member)  # fmt: skip


def approve_by_policy(
    approval: Approval, rule: str, now: datetime, ws: governance.Workspace, actor: str = ""
) -> events.Approved:
    """A standing permission (or a grant, when ``actor`` names it) covers the request: approved
    at once, and the history says why."""
    return _next(
        approval, events.Approved, now, actor or f"policy:{rule}", digest=approval.request.digest,
        requested_digest=approval.request.digest,
        redeem_by=now + timedelta(seconds=ws.settings.redeem_within_s),
    )  # fmt: skip


def approve_standing(
    approval: Approval,
    ws: governance.Workspace,
    rule: StandingPermission,
    allowance: governance.Allowance | None,
    held: Budget | None,
    now: datetime,
) -> list[events.StandingUsed | events.Approved | events.CreditsReserved] | None:
    """A new request that standing permission ``rule`` covers, approved at once: the rule's use
    of the day's ``allowance``, the approval by ``policy:<rule>`` and the reservation of its
    ceiling against the period's budget ``held``. None when the day's allowance or the budget
    cannot take it: a person then decides (and their approval meets the same cap)."""
    ceiling = approval.request.action.max_credits
    if ceiling is None:
        return None
    day = governance.allowance_day(now)
    used = governance.use_allowance(ws, allowance, rule, approval.id, ceiling, day, now)
    if used is None:
        return None
    return _at_once(approval, ws, used, approve_by_policy(approval, rule.name, now, ws), held, now)


def approve_granted(
    approval: Approval, ws: governance.Workspace, grant: Grant, held: Budget | None, now: datetime
) -> list[events.GrantUsed | events.Approved | events.CreditsReserved] | None:
    """A new request that a grant covers, approved at once exactly as a standing permission
    approves: the grant's use, the approval by ``grant:<id>`` and the reservation of its ceiling
    in the same save. None when the grant does not cover it (see ``grants.why_not``) or the
    budget cannot take it: a person then decides."""
    if grants.why_not(grant, ws, approval.request, now) is not None:
        return None
    used = grants.use(grant, approval.request, now)
    approved = approve_by_policy(approval, "", now, ws, actor=grants.actor(grant))
    return _at_once(approval, ws, used, approved, held, now)


U = TypeVar("U", events.StandingUsed, events.GrantUsed)


def _at_once(
    approval: Approval,
    ws: governance.Workspace,
    used: U,
    approved: events.Approved,
    held: Budget | None,
    now: datetime,
) -> list[U | events.Approved | events.CreditsReserved] | None:
    """The use, the approval and its reservation; None when the budget cannot take it."""
    ceiling = approval.request.action.max_credits
    try:
        approving: list[Any] = budget.grant(held, ws.settings.budget, approved, ceiling, now)
    except SpendCapExceeded:
        return None
    return [used, *approving]


def redeem(approval: Approval, cmd: commands.Redeem, now: datetime) -> events.Redeemed:
    """The final check before execution: approved, not yet redeemed, in time, the same action."""
    if approval.status == "responded":
        raise NotApproved(
            "a person answered this request instead of approving it: it never runs; read their "
            "message (reason) and ask again if it still applies",
            status=approval.status, reason=approval.reason,
        )  # fmt: skip
    if approval.status != "approved":
        raise NotApproved(
            f"the approval is {approval.status}: only an approved action may run",
            status=approval.status,
        )
    if approval.redeemed_at is not None:
        raise AlreadyRedeemed(
            "the approval was redeemed already: an approval runs once",
            redeemed_by=approval.redeemed_by,
            redeemed_at=approval.redeemed_at.isoformat(),
        )
    deadline = approval.redeem_by or approval.request.expires_at
    if now >= deadline:
        raise DeadlinePassed("the time to redeem this approval has passed",
                             redeem_by=deadline.isoformat())  # fmt: skip
    _require_approved_action(approval.current, cmd)
    return _next(approval, events.Redeemed, now, cmd.executor, executor=cmd.executor,
                 digest=cmd.digest)  # fmt: skip


def _require_approved_action(approved: edits.Version, cmd: commands.Redeem) -> None:
    """Refuse a redeem for anything but the approved action (after an edit: the edited one),
    saying which part differs; never with the approved digest, which an executor could copy
    instead of fixing what it runs."""
    if cmd.action is None:
        if cmd.digest != approved.digest:
            raise DigestMismatch(
                "the digest of the action about to run is not the approved one; redeem with its "
                "action and proposed_payload to learn which of them differs",
                given=cmd.digest,
            )
        return
    fields = action_differences(approved.action, cmd.action)
    differs = ["action"] if fields else []
    if payload_differs(approved.proposed_payload, cmd.proposed_payload):
        differs.append("proposed_payload")
    if differs:
        raise DigestMismatch(
            f"the {' and the '.join(differs)} about to run "
            f"{'is' if len(differs) == 1 else 'are'} not what was approved",
            given=cmd.digest,
            differs=differs,
            **({"action_fields": fields} if fields else {}),
        )
    if cmd.digest != action_digest(cmd.action, cmd.proposed_payload):
        raise DigestMismatch(
            "the action and proposed_payload are the approved ones, but the digest given is not "
            "theirs: compute it from them",
            given=cmd.digest,
            differs=["digest"],
        )


def report(approval: Approval, cmd: commands.Report, now: datetime) -> events.RunReported:
    """What the run used and did; over the ceiling is recorded and flagged."""
    if approval.redeemed_at is None:
        raise Conflict("only a redeemed approval has a run to report", status=approval.status)
    if approval.run is not None:
        raise Conflict("this run was reported already", reported_at=approval.run.occurred_at)
    ceiling = approval.current.action.max_credits
    return _next(
        approval, events.RunReported, now, cmd.by,
        credits_used=cmd.credits_used, outcome=cmd.outcome, summary=cmd.summary,
        external_refs=cmd.external_refs,
        over_ceiling=ceiling is not None and cmd.credits_used > ceiling,
    )  # fmt: skip


def check_spend(
    approval: Approval, cmd: commands.CheckSpend, now: datetime, verdict: Verdict
) -> events.SpendChecked | events.Rejected:
    """Record the budget picture once, or reject a request that can never fit the budget."""
    _require_pending(approval, now)
    if approval.spend is not None:
        raise Conflict("the spend check was recorded already", rule="spend_checked_once")
    if verdict.never is not None:
        return _next(approval, events.Rejected, now, cmd.by, reason=verdict.never)
    return _next(approval, events.SpendChecked, now, cmd.by, spend=verdict.picture)


def remind(
    approval: Approval, cmd: commands.Remind, now: datetime, reminders: Reminders | None
) -> events.Reminded:
    """The next reminder, once it is due (``not_due`` before; none after a decision)."""
    _require_pending(approval, now)
    if reminders is None:
        raise Conflict("the workspace sends no reminders", rule="no_reminders")
    if approval.reminders and reminders.repeat_every_s is None:
        raise Conflict("the approvers were reminded already", rule="reminded_once")
    due = approval.request.occurred_at + timedelta(
        seconds=reminders.remind_after_s + approval.reminders * (reminders.repeat_every_s or 0)
    )
    if now < due:
        raise Conflict("no reminder is due yet", rule="not_due", due=due.isoformat())
    return _next(approval, events.Reminded, now, cmd.by, count=approval.reminders + 1)


def escalate(
    approval: Approval, cmd: commands.Escalate, now: datetime, reminders: Reminders | None
) -> events.Escalated:
    """Escalate, once, when the workspace's escalation time has passed."""
    _require_pending(approval, now)
    if reminders is None or reminders.escalate_to is None or reminders.escalate_after_s is None:
        raise Conflict("the workspace escalates nothing", rule="no_escalation")
    if approval.escalated_to is not None:
        raise Conflict(f"escalated to {approval.escalated_to} already", rule="escalated_once")
    due = approval.request.occurred_at + timedelta(seconds=reminders.escalate_after_s)
    if now < due:
        raise Conflict("escalation is not due yet", rule="not_due", due=due.isoformat())
    return _next(approval, events.Escalated, now, cmd.by, group=reminders.escalate_to)


def releasable(approval: Approval, now: datetime) -> str:
    """The budget period holding an approval nobody redeemed in time (raise if it is not so)."""
    if approval.status != "approved":
        raise NotApproved(f"the approval is {approval.status}: it holds no credits",
                          status=approval.status)  # fmt: skip
    if approval.redeemed_at is not None:
        raise AlreadyRedeemed("the approval was redeemed: its run holds the credits",
                              redeemed_at=approval.redeemed_at.isoformat())  # fmt: skip
    deadline = approval.redeem_by or approval.request.expires_at
    if now < deadline:
        raise Conflict("the approval may still be redeemed", rule="not_due",
                       redeem_by=deadline.isoformat())  # fmt: skip
    if approval.budget_period is None:
        raise Conflict("the approval holds no credits", rule="nothing_held")
    return approval.budget_period


def cancel(
    approval: Approval, cmd: commands.Cancel, now: datetime, ws: governance.Workspace
) -> events.Cancelled:
    _require_pending(approval, now)
    governance.may_cancel(ws, approval.request, cmd.by)
    return _next(approval, events.Cancelled, now, cmd.by, reason=cmd.reason)


def expire(approval: Approval, cmd: commands.Expire, now: datetime) -> events.Expired:
    if approval.is_terminal:
        raise _already_decided(approval)
    if now < approval.request.expires_at:
        raise Conflict(
            "the approval is not due to expire yet",
            expires_at=approval.request.expires_at.isoformat(),
        )
    return _next(approval, events.Expired, now, cmd.by)


def deliver(
    approval: Approval, cmd: commands.Deliver, now: datetime
) -> events.Delivered | events.DeliveryFailed:
    """Record that a channel carried the request, once per channel (or that it could not).

    A record of what a channel did, not a decision: taken whatever the approval's state, so a
    channel that took the request while it was being decided (or past its deadline) is still
    recorded, and so told how it ended."""
    if any(d.channel == cmd.channel for d in approval.deliveries):
        raise Conflict(f"the request was delivered to {cmd.channel} already",
                       rule="delivered_once", channel=cmd.channel)  # fmt: skip
    if cmd.error is not None:
        return _next(approval, events.DeliveryFailed, now, cmd.by, channel=cmd.channel,
                     target=cmd.target, error=cmd.error, attempts=cmd.attempts)  # fmt: skip
    return _next(
        approval,
        events.Delivered,
        now,
        cmd.by,
        channel=cmd.channel,
        target=cmd.target,
        external_ref=cmd.external_ref,
    )


def _require_pending(approval: Approval, now: datetime) -> None:
    if approval.is_terminal:
        raise _already_decided(approval)
    if now >= approval.request.expires_at:
        raise DeadlinePassed(
            "the approval's deadline has passed",
            expires_at=approval.request.expires_at.isoformat(),
        )


def _already_decided(approval: Approval) -> AlreadyDecided:
    return AlreadyDecided(
        f"the approval is already {approval.status}",
        status=approval.status,
        decided_by=approval.decided_by,
    )


def _next(approval: Approval, cls: type[E], now: datetime, actor: str, **fields: Any) -> E:
    return cls(
        event_id=uuid4(),
        approval_id=approval.id,
        version=approval.version + 1,
        workspace_id=approval.workspace_id,
        occurred_at=now,
        actor=actor,
        trace_id=approval.request.trace_id,
        **fields,
    )


# -- evolution ------------------------------------------------------------------------------


@singledispatch
def mutate(event: events.Event, approval: Approval | None) -> Approval:
    raise TypeError(f"no mutator for {type(event).__name__}")


@mutate.register(events.Requested)
def _requested(event: events.Requested, approval: Approval | None) -> Approval:
    return Approval(
        id=event.approval_id,
        version=event.version,
        workspace_id=event.workspace_id,
        status="pending",
        request=event,
        modified_at=event.occurred_at,
        settled_version=event.version,
    )


@mutate.register(events.Delivered)
def _delivered(event: events.Delivered, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    delivery = Delivery(channel=event.channel, target=event.target, external_ref=event.external_ref)
    return msgspec.structs.replace(
        current,
        version=event.version,
        modified_at=event.occurred_at,
        deliveries=(*current.deliveries, delivery),
    )


@mutate.register(events.SpendChecked)
def _spend_checked(event: events.SpendChecked, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    return msgspec.structs.replace(
        current, version=event.version, modified_at=event.occurred_at, spend=event
    )


@mutate.register(events.DeliveryFailed)
def _delivery_failed(event: events.DeliveryFailed, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    return msgspec.structs.replace(current, version=event.version, modified_at=event.occurred_at)


@mutate.register(events.Reminded)
@mutate.register(events.Escalated)
def _waiting(event: events.Reminded | events.Escalated, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    if isinstance(event, events.Reminded):
        current = msgspec.structs.replace(current, reminders=event.count)
    else:
        current = msgspec.structs.replace(current, escalated_to=event.group)
    return msgspec.structs.replace(current, version=event.version, modified_at=event.occurred_at)


@mutate.register(events.VoteCast)
def _vote_cast(event: events.VoteCast, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    if event.action is not None:  # a new version: its votes start from this one
        current = msgspec.structs.replace(
            current, proposal=event, votes=(), voters=(), signatures=()
        )
    signatures = current.signatures if event.passkey is None else (*current.signatures,
                                                                   event.passkey)  # fmt: skip
    return msgspec.structs.replace(
        current,
        version=event.version,
        modified_at=event.occurred_at,
        votes=(*current.votes, event.for_member or event.voter),
        voters=(*current.voters, event.voter),
        signatures=signatures,
        settled_version=event.version,
    )


@mutate.register(events.Approved)
@mutate.register(events.Rejected)
@mutate.register(events.Expired)
@mutate.register(events.Cancelled)
@mutate.register(events.Responded)
def _resolved(event: events.Event, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    status: Status = _STATUS_AFTER[type(event)]
    if isinstance(event, events.Approved):
        current = msgspec.structs.replace(
            current,
            redeem_by=event.redeem_by,
            budget_period=event.budget_period,
            receipt=event.receipt,
            proposal=event if event.action is not None else None,
            signatures=event.passkeys or current.signatures,
        )
    return msgspec.structs.replace(
        current,
        version=event.version,
        modified_at=event.occurred_at,
        status=status,
        resolved_at=event.occurred_at,
        decided_by=event.actor,
        reason=ending_reason(event),
        rerun=getattr(event, "rerun", False),
        votes=getattr(event, "votes", current.votes) or current.votes,
    )


@mutate.register(events.Redeemed)
def _redeemed(event: events.Redeemed, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    return msgspec.structs.replace(
        current, version=event.version, modified_at=event.occurred_at,
        redeemed_by=event.executor, redeemed_at=event.occurred_at,
    )  # fmt: skip


@mutate.register(events.RunReported)
def _run_reported(event: events.RunReported, approval: Approval | None) -> Approval:
    current = _existing(approval, event)
    return msgspec.structs.replace(
        current, version=event.version, modified_at=event.occurred_at, run=event
    )


_STATUS_AFTER: dict[type[events.Event], Status] = {
    events.Approved: "approved",
    events.Rejected: "rejected",
    events.Expired: "expired",
    events.Cancelled: "cancelled",
    events.Responded: "responded",
}


def ending_reason(event: events.Event) -> str | None:
    """The words a person gave with an ending: a rejection's reason, or the message of an answer
    (the requester reads both in the approval's ``reason``)."""
    if isinstance(event, events.Responded):
        return event.message
    return getattr(event, "reason", None)


def _existing(approval: Approval | None, event: events.Event) -> Approval:
    if approval is None:
        raise TypeError(f"{event.event_type} before requested for {event.approval_id}")
    return approval


def project(approval: Approval | None, history: Iterable[events.Event]) -> Approval | None:
    for event in history:
        approval = mutate(event, approval)
    return approval
