"""Who may do what in a workspace: members, roles, approver groups, delegation, standing rules.

Pure, like the domain: the workspace's state is folded from its events, and every check either
returns or raises ``Forbidden`` naming the rule that refused (``details.rule``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import events
from approvals.schemas.workspace import (
    WorkspaceFileError,
    WorkspaceSettings,
    check_consistency,
    diff,
)
from approvals.services.approvals.errors import Forbidden, Invalid, NotFound

if TYPE_CHECKING:
    from approvals.schemas import commands
    from approvals.schemas.types import RiskLevel
    from approvals.schemas.workspace import Role, StandingPermission

WORKSPACE_NAMESPACE = UUID("0b7e4a52-6c1f-4f0e-9a77-3c2d8e5f1a90")


def workspace_key(workspace_id: str) -> UUID:
    """The id of a workspace's settings aggregate."""
    return uuid5(WORKSPACE_NAMESPACE, f"settings\x00{workspace_id}")


def allowance_key(workspace_id: str, rule: str, day: str) -> UUID:
    """The id of one standing permission's use on one day."""
    return uuid5(WORKSPACE_NAMESPACE, f"allowance\x00{workspace_id}\x00{rule}\x00{day}")


def allowance_day(now: datetime) -> str:
    """The day whose allowance a standing permission's use counts against."""
    return now.date().isoformat()


def has_role(settings: WorkspaceSettings, member: str, role: Role) -> bool:
    entry = settings.members.get(member)
    return entry is not None and (role in entry.roles)


def may_approve_risk(settings: WorkspaceSettings, member: str, risk: RiskLevel) -> bool:
    groups = settings.approvers.get(risk)
    if groups is None:
        return True
    return any(settings.in_group(member, group) for group in groups)


class Asked(Protocol):
    """What the rules read of a request: who asked, for whom, for which skill, at what risk
    (a stored ``requested`` event, or a request as the status view lists it)."""

    @property
    def requested_by(self) -> str: ...
    @property
    def on_behalf_of(self) -> str | None: ...
    @property
    def skill_name(self) -> str: ...
    @property
    def risk_level(self) -> RiskLevel: ...


class Delegation(msgspec.Struct, frozen=True, kw_only=True):
    delegator: str
    delegate: str
    ends_at: datetime


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    workspace_id: str
    version: int
    settings: WorkspaceSettings
    configured_by: str
    configured_at: datetime
    delegations: tuple[Delegation, ...] = ()

    # -- who is who ----------------------------------------------------------------------

    def member_of(self, actor: str) -> str | None:
        """The member ``actor`` names (by id or alias), or None."""
        return self.settings.member_named(actor)

    def has_role(self, member: str, role: Role) -> bool:
        return has_role(self.settings, member, role)

    def may_approve_risk(self, member: str, risk: RiskLevel) -> bool:
        return may_approve_risk(self.settings, member, risk)

    def delegation(self, delegator: str, delegate: str, now: datetime) -> Delegation | None:
        for granted in reversed(self.delegations):
            if granted.delegator == delegator and granted.delegate == delegate:
                return granted if now < granted.ends_at else None
        return None


class Allowance(msgspec.Struct, frozen=True, kw_only=True):
    """A standing permission's use on one day."""

    id: UUID
    version: int
    used: float


# -- decisions ------------------------------------------------------------------------------


def configure(
    current: Workspace | None, workspace_id: str, cmd: commands.Configure, now: datetime
) -> events.WorkspaceConfigured | None:
    """The change of settings, or None when the settings are already in force (nothing to
    record: applying the same file twice is harmless)."""
    try:
        check_consistency(cmd.settings)
    except WorkspaceFileError as error:
        raise Invalid(f"workspace settings: {error}") from None
    if current is None:
        # A new workspace: whoever creates it must be one of its admins.
        member = cmd.by if cmd.by in cmd.settings.members else None
        if member is None or "admin" not in cmd.settings.members[member].roles:
            raise Forbidden(
                "a new workspace must list the person who creates it as an admin",
                rule="creator_is_admin",
                by=cmd.by,
            )
    else:
        require_role(current, cmd.by, "admin", "administer this workspace")
    changes = diff(current.settings if current else None, cmd.settings)
    if current is not None and not changes:
        return None
    return events.WorkspaceConfigured(
        event_id=uuid4(),
        aggregate_id=workspace_key(workspace_id),
        version=(current.version if current else 0) + 1,
        workspace_id=workspace_id,
        occurred_at=now,
        actor=cmd.by,
        settings=cmd.settings,
        changes=tuple(changes),
    )


def delegate(ws: Workspace, cmd: commands.Delegate, now: datetime) -> events.Delegated:
    delegator = require_role(ws, cmd.by, "approver", "delegate approvals")
    to = ws.member_of(cmd.to)
    if to is None:
        raise Forbidden("the delegate is not a member", rule="delegate_is_member", to=cmd.to)
    if to == delegator:
        raise Invalid("a member cannot delegate to themselves", to=cmd.to)
    return events.Delegated(
        event_id=uuid4(),
        aggregate_id=ws.id,
        version=ws.version + 1,
        workspace_id=ws.workspace_id,
        occurred_at=now,
        actor=delegator,
        delegator=delegator,
        delegate=to,
        ends_at=cmd.ends_at,
        reason=cmd.reason,
    )


def require_role(ws: Workspace, actor: str, role: Role, doing: str) -> str:
    member = ws.member_of(actor)
    if member is None:
        raise Forbidden(
            f"{actor} is not a member of workspace {ws.workspace_id}",
            rule="member",
            actor=actor,
        )
    if not ws.has_role(member, role):
        raise Forbidden(f"{doing} needs the {role} role", rule=f"role:{role}", actor=actor)
    return member


class Decider(msgspec.Struct, frozen=True, kw_only=True):
    """Who decides: the member acting, and the member whose place they take (delegation)."""

    member: str
    for_member: str | None = None

    @property
    def counted(self) -> str:
        """The member whose vote this is."""
        return self.for_member or self.member


def decider(
    ws: Workspace,
    actor: str,
    for_member: str | None,
    request: Asked,
    now: datetime,
    *,
    approving: bool,
    escalated_to: str | None = None,
) -> Decider:
    """Check that ``actor`` may decide ``request``; raise Forbidden naming the rule if not."""
    member = _acting(ws.settings, ws.workspace_id, actor, approving=approving)
    if for_member is not None:
        principal = ws.member_of(for_member)
        if principal is None or ws.delegation(principal, member, now) is None:
            raise Forbidden(
                f"{member} holds no current delegation from {for_member}",
                rule="delegation",
                approver=actor,
                for_member=for_member,
            )
        who = Decider(member=member, for_member=principal)
    else:
        who = Decider(member=member)
    _entitled(ws.settings, who, request, actor, approving=approving, escalated_to=escalated_to)
    return who


def may_approve(
    settings: WorkspaceSettings, workspace_id: str, actor: str, request: Asked
) -> Decider:
    """Check that ``actor`` may approve ``request`` in their own name (no delegation, no
    escalation): the rules ``decider`` applies, for the review queue to ask before it hands a
    request to a reviewer. Raise Forbidden naming the rule if not."""
    who = Decider(member=_acting(settings, workspace_id, actor, approving=True))
    _entitled(settings, who, request, actor, approving=True)
    return who


def _acting(settings: WorkspaceSettings, workspace_id: str, actor: str, *, approving: bool) -> str:
    """The member ``actor`` names, if they may take part in a decision at all."""
    if approving and not actor.startswith("user:"):
        raise Forbidden(
            "only a person (user:<id>) can approve", rule="people_approve", approver=actor
        )
    member = settings.member_named(actor)
    if member is None:
        raise Forbidden(
            f"{actor} is not a member of workspace {workspace_id}", rule="member", approver=actor
        )
    return member


def _entitled(
    settings: WorkspaceSettings,
    who: Decider,
    request: Asked,
    actor: str,
    *,
    approving: bool,
    escalated_to: str | None = None,
) -> None:
    """The member whose vote it is holds the approver role, may decide the request's risk (or
    belongs to the group it was escalated to), and, to approve, is not a party to it."""
    entitled = who.counted
    if not has_role(settings, entitled, "approver"):
        raise Forbidden(
            f"{entitled} does not have the approver role", rule="role:approver", approver=actor
        )
    escalated = escalated_to is not None and settings.in_group(entitled, escalated_to)
    if not escalated and not may_approve_risk(settings, entitled, request.risk_level):
        groups = ", ".join(settings.approvers.get(request.risk_level, ()))
        raise Forbidden(
            f"{request.risk_level} risk is decided by the groups {groups} only",
            rule=f"approvers:{request.risk_level}",
            approver=actor,
        )
    if approving:
        separation_of_duties(settings, request, who, actor)


def separation_of_duties(
    settings: WorkspaceSettings, request: Asked, who: Decider, actor: str
) -> None:
    """Nobody approves what they asked for, or what is done for them, in person or by proxy."""
    parties = {request.requested_by, request.on_behalf_of} - {None}
    parties |= {m for p in list(parties) if p and (m := settings.member_named(p))}
    for person in {who.member, who.counted}:
        if person in parties:
            raise Forbidden(
                "the requester and the person it acts for cannot approve their own request",
                rule="separation:requester",
                approver=actor,
            )
    if settings.bar_skill_owner:
        owner = settings.skill_owners.get(request.skill_name)
        owner_member = settings.member_named(owner) if owner else None
        if owner_member is not None and owner_member in {who.member, who.counted}:
            raise Forbidden(
                f"the owner of skill {request.skill_name} cannot approve its requests",
                rule="separation:skill_owner",
                approver=actor,
            )


def may_cancel(ws: Workspace, request: events.Requested, actor: str) -> None:
    member = ws.member_of(actor)
    parties = {request.requested_by, request.on_behalf_of}
    if actor in parties or (member is not None and member in parties):
        return
    if member is not None and ws.has_role(member, "admin"):
        return
    raise Forbidden(
        "only the requester, the person it acts for or an admin can cancel",
        rule="cancel",
        by=actor,
    )


def may_request(ws: Workspace, cmd: commands.Request) -> None:
    require_role(ws, cmd.requested_by, "requester", "asking for approval")
    if cmd.on_behalf_of is not None and ws.member_of(cmd.on_behalf_of) is None:
        raise Forbidden(
            f"{cmd.on_behalf_of} is not a member of workspace {ws.workspace_id}",
            rule="on_behalf_of_member",
            on_behalf_of=cmd.on_behalf_of,
        )


def standing_rule(ws: Workspace, cmd: commands.Request) -> StandingPermission | None:
    """The first standing permission that covers this request's action, if any."""
    action = cmd.action
    credits = action.max_credits
    for rule in ws.settings.standing:
        if (
            action.kind in rule.kinds
            and (not rule.providers or action.provider in rule.providers)
            and cmd.risk_level in rule.risk_levels
            and (not rule.requested_by or cmd.requested_by in rule.requested_by)
            and credits is not None
            and credits <= rule.max_credits_per_run
        ):
            return rule
    return None


def use_allowance(
    ws: Workspace,
    allowance: Allowance | None,
    rule: StandingPermission,
    approval_id: UUID,
    credits: float,
    day: str,
    now: datetime,
) -> events.StandingUsed | None:
    """The use of ``rule`` for this approval, or None if the day's allowance would be exceeded."""
    used = allowance.used if allowance else 0.0
    if rule.max_credits_per_day is not None and used + credits > rule.max_credits_per_day:
        return None
    return events.StandingUsed(
        event_id=uuid4(),
        aggregate_id=allowance_key(ws.workspace_id, rule.name, day),
        version=(allowance.version if allowance else 0) + 1,
        workspace_id=ws.workspace_id,
        occurred_at=now,
        actor=f"policy:{rule.name}",
        rule=rule.name,
        day=day,
        approval_id=approval_id,
        credits=credits,
        total=used + credits,
    )


def require_workspace(ws: Workspace | None, workspace_id: str) -> Workspace:
    if ws is None:
        raise NotFound(
            f"workspace {workspace_id} does not exist: apply a workspace file first",
            workspace=workspace_id,
            kind="workspace",
        )
    return ws


# -- evolution ------------------------------------------------------------------------------


def evolve_workspace(ws: Workspace | None, event: events.WorkspaceEvent) -> Workspace:
    if isinstance(event, events.WorkspaceConfigured):
        return Workspace(
            id=event.aggregate_id,
            workspace_id=event.workspace_id,
            version=event.version,
            settings=event.settings,
            configured_by=event.actor,
            configured_at=event.occurred_at,
            delegations=ws.delegations if ws else (),
        )
    if isinstance(event, events.Delegated) and ws is not None:
        granted = Delegation(
            delegator=event.delegator, delegate=event.delegate, ends_at=event.ends_at
        )
        return msgspec.structs.replace(
            ws, version=event.version, delegations=(*ws.delegations, granted)
        )
    raise TypeError(f"{event.event_type} does not apply to a workspace's settings")


def evolve_allowance(allowance: Allowance | None, event: events.StandingUsed) -> Allowance:
    return Allowance(id=event.aggregate_id, version=event.version, used=event.total)
