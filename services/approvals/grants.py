"""Grants: an approver, approving one request, approves similar ones in advance for a while.

Pure, like the domain. A grant lives in the aggregate of its *slot*: one per workspace,
requester, kind, provider and destination (the four a grant matches on exactly), so the request
path finds the one grant that could cover it by its key alone, and every use, a revoke and a new
grant there are writes to the same aggregate: two of them at once conflict, the loser is decided
again against the winner, and so a revoked grant never covers a request decided after it, and a
grant of K runs a day never covers a K+1-th (the race the tests run). A grant's id is the id of
the approval it was given with, so the history leads from ``grant:<id>`` back to that decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import events
from approvals.schemas.workspace import Grants
from approvals.services.approvals import governance
from approvals.services.approvals.errors import Conflict, Forbidden, Invalid, NotFound

if TYPE_CHECKING:
    from approvals.schemas import commands
    from approvals.schemas.types import RiskLevel

GRANT_NAMESPACE = UUID("3c9a61f2-0d4e-4b7a-a1c5-2e8f7d6b5a49")
DEFAULTS = Grants()
RISK_ORDER: dict[RiskLevel, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
GrantStatus = Literal["active", "expired", "revoked"]


def slot_key(
    workspace_id: str, requested_by: str, kind: str, provider: str | None, destination: str | None
) -> UUID:
    """The aggregate holding the grant (if any) for these four."""
    parts = (workspace_id, requested_by, kind, provider or "", destination or "")
    return uuid5(GRANT_NAMESPACE, "grant\x00" + "\x00".join(parts))


def slot_of(request: events.Requested) -> UUID:
    action = request.action
    return slot_key(
        request.workspace_id, request.requested_by, action.kind, action.provider,
        action.destination,
    )  # fmt: skip


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """The grant last given in a slot, and its use on its last day."""

    id: UUID  # the slot
    version: int
    workspace_id: str
    given: events.GrantGiven
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    day: str = ""
    runs_today: int = 0
    runs_total: int = 0

    @property
    def grant_id(self) -> UUID:
        return self.given.grant_id


def limits_of(ws: governance.Workspace) -> Grants:
    return ws.settings.grants or DEFAULTS


def ends_at(grant: Grant, ws: governance.Workspace) -> datetime:
    """When it stops covering: its own expiry, or sooner if the workspace's maximum was lowered."""
    cap = grant.given.occurred_at + timedelta(hours=limits_of(ws).max_hours)
    return min(grant.given.expires_at, cap)


def status(grant: Grant, ws: governance.Workspace, now: datetime) -> GrantStatus:
    if grant.revoked_at is not None:
        return "revoked"
    return "active" if now < ends_at(grant, ws) else "expired"


# -- decisions ------------------------------------------------------------------------------


def give(
    slot: Grant | None,
    ws: governance.Workspace,
    approved: events.Approved,
    request: events.Requested,
    terms: commands.GrantTerms,
    now: datetime,
) -> events.GrantGiven:
    """The grant an approval's approver gives with it, within the workspace's bounds."""
    limits = limits_of(ws)
    if limits.max_hours == 0:
        raise Forbidden("this workspace allows no grants ([grants] max_hours = 0)",
                        rule="grants:disabled")  # fmt: skip
    if terms.hours > limits.max_hours:
        raise Invalid(
            f"grant.hours {terms.hours:g} is over the workspace's maximum of "
            f"{limits.max_hours:g} hours",
            field="grant.hours", max_hours=limits.max_hours,
        )  # fmt: skip
    if limits.granted_by == "admin":
        governance.require_role(ws, approved.actor, "admin", "granting similar requests")
    if approved.for_member is not None:
        raise Forbidden("a grant is given in one's own name, not under a delegation",
                        rule="grants:delegation")  # fmt: skip
    if len(approved.votes) > 1:
        raise Forbidden(
            "a request that needs several approvals cannot be granted in advance by one person",
            rule="grants:quorum", quorum=request.quorum,
        )  # fmt: skip
    action = request.action
    max_credits = terms.max_credits if terms.max_credits is not None else action.max_credits
    return events.GrantGiven(
        event_id=uuid4(), aggregate_id=slot_of(request), version=(slot.version if slot else 0) + 1,
        workspace_id=request.workspace_id, occurred_at=now, actor=approved.actor,
        grant_id=request.approval_id, requested_by=request.requested_by, kind=action.kind,
        provider=action.provider, destination=action.destination, risk_level=request.risk_level,
        max_credits=max_credits, runs=terms.runs, hours=terms.hours,
        expires_at=now + timedelta(hours=terms.hours),
    )  # fmt: skip


def why_not(
    grant: Grant, ws: governance.Workspace, request: events.Requested, now: datetime
) -> str | None:
    """Why ``grant`` does not cover ``request`` now (None: it does)."""
    given, action = grant.given, request.action
    if status(grant, ws, now) != "active":
        return f"the grant is {status(grant, ws, now)}"
    same = (given.requested_by, given.kind, given.provider, given.destination)
    if same != (request.requested_by, action.kind, action.provider, action.destination):
        return "another requester, kind, provider or destination"
    if RISK_ORDER[request.risk_level] > RISK_ORDER[given.risk_level]:
        return f"{request.risk_level} risk is over the grant's {given.risk_level}"
    ceiling = action.max_credits
    if (ceiling is None) != (given.max_credits is None):
        return "a grant with a credit limit covers requests with a ceiling only, and only those"
    if ceiling is not None and given.max_credits is not None and ceiling > given.max_credits:
        return f"the ceiling {ceiling:g} is over the grant's {given.max_credits:g} per run"
    if given.runs is not None and _runs_on(grant, now) >= given.runs:
        return f"the grant's {given.runs} runs of the day are used"
    try:  # the granter must still be one who may approve it (roles change; parties differ)
        governance.may_approve(ws.settings, ws.workspace_id, given.actor, request)
        if limits_of(ws).granted_by == "admin":
            governance.require_role(ws, given.actor, "admin", "granting similar requests")
    except Forbidden as refused:
        return f"the person who granted it may not approve this one: {refused.message}"
    return None


def _runs_on(grant: Grant, now: datetime) -> int:
    return grant.runs_today if grant.day == governance.allowance_day(now) else 0


def use(grant: Grant, request: events.Requested, now: datetime) -> events.GrantUsed:
    """The grant's use for ``request`` (which ``why_not`` found covered)."""
    return events.GrantUsed(
        event_id=uuid4(), aggregate_id=grant.id, version=grant.version + 1,
        workspace_id=grant.workspace_id, occurred_at=now, actor=actor(grant),
        grant_id=grant.grant_id, approval_id=request.approval_id,
        day=governance.allowance_day(now), runs=_runs_on(grant, now) + 1,
        credits=request.action.max_credits,
    )  # fmt: skip


def actor(grant: Grant) -> str:
    """Who approves what a grant covers: the grant, by its id."""
    return f"grant:{grant.grant_id}"


def revoke(
    grant: Grant | None, ws: governance.Workspace, cmd: commands.RevokeGrant, now: datetime
) -> events.GrantRevoked:
    """End a grant now: the member who gave it, or any approver or admin, may."""
    if grant is None or grant.grant_id != cmd.grant_id:
        raise NotFound("no such grant", grant_id=str(cmd.grant_id), kind="grant")
    member = ws.member_of(cmd.by)
    if member is None:
        raise Forbidden(f"{cmd.by} is not a member of workspace {ws.workspace_id}",
                        rule="member", actor=cmd.by)  # fmt: skip
    if member != ws.member_of(grant.given.actor) and not (
        ws.has_role(member, "approver") or ws.has_role(member, "admin")
    ):
        raise Forbidden("revoking a grant needs the approver or admin role",
                        rule="role:approver", actor=cmd.by)  # fmt: skip
    if grant.revoked_at is not None:
        raise Conflict(
            "the grant was revoked already", rule="revoked_once", revoked_by=grant.revoked_by,
            revoked_at=grant.revoked_at.isoformat(),
        )  # fmt: skip
    return events.GrantRevoked(
        event_id=uuid4(), aggregate_id=grant.id, version=grant.version + 1,
        workspace_id=grant.workspace_id, occurred_at=now, actor=cmd.by,
        grant_id=grant.grant_id, reason=cmd.reason,
    )  # fmt: skip


# -- evolution ------------------------------------------------------------------------------


def evolve(
    grant: Grant | None, event: events.GrantGiven | events.GrantUsed | events.GrantRevoked
) -> Grant:
    if isinstance(event, events.GrantGiven):
        return Grant(id=event.aggregate_id, version=event.version,
                     workspace_id=event.workspace_id, given=event)  # fmt: skip
    if grant is None:
        raise TypeError(f"{event.event_type} before grant_given for {event.aggregate_id}")
    if isinstance(event, events.GrantUsed):
        return msgspec.structs.replace(
            grant, version=event.version, day=event.day, runs_today=event.runs,
            runs_total=grant.runs_total + 1,
        )  # fmt: skip
    return msgspec.structs.replace(
        grant, version=event.version, revoked_at=event.occurred_at, revoked_by=event.actor
    )
