"""A grant given with an approval: what it covers, and when it stops, as pure decisions of the
workspace, the grant's slot, the request and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from approvals.schemas import commands, events
from approvals.schemas.workspace import Budget, Grants
from approvals.services.approvals import aggregates, budget, domain, grants
from approvals.services.approvals.errors import Forbidden, Invalid, NotFound
from tests.workspaces import SETTINGS, workspace

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
WS = workspace("acme")
ACTION = commands.Action(kind="provider_call", mode="live", provider="clearbit",
                         destination="provider:clearbit", max_credits=4)  # fmt: skip


def pending(approval_id: UUID | None = None, at: datetime = NOW, **changes: Any) -> domain.Approval:
    fields: dict[str, Any] = {"requested_by": "service:enricher", "risk_level": "low"}
    action = msgspec.structs.replace(ACTION, **changes.pop("action", {}))
    fields.update(changes)
    cmd = commands.Request(skill_name="enrich", skill_execution_id="e1", title="Enrich",
                           summary="Enrich 4 rows", action=action, **fields)  # fmt: skip
    requested = domain.request(cmd, approval_id=approval_id or uuid4(), workspace_id="acme",
                               now=at, default_expiry_s=3600)  # fmt: skip
    return domain.mutate(requested, None)


def given(ws: Any = WS, **terms: Any) -> grants.Grant:
    """The grant ana gives when she approves the first request."""
    first = pending()
    vote = commands.Approve(approval_id=first.id, approver="user:ana", digest=first.request.digest)
    [approved] = domain.approve(first, vote, NOW, ws)
    assert isinstance(approved, events.Approved)
    event = grants.give(None, ws, approved, first.request,
                        commands.GrantTerms(**{"hours": 8, **terms}), NOW)  # fmt: skip
    return aggregates.evolve(None, event)  # type: ignore[no-any-return]


def covered(grant: grants.Grant, later: domain.Approval, at: datetime, ws: Any = WS) -> Any:
    return domain.approve_granted(later, ws, grant, None, at)


def test_a_grant_covers_a_matching_request_at_once_as_grant_id() -> None:
    grant = given()
    later = pending(at=NOW + timedelta(hours=1))
    produced = covered(grant, later, NOW + timedelta(hours=1))
    assert produced is not None
    used, approved = produced
    assert isinstance(used, events.GrantUsed)
    assert isinstance(approved, events.Approved)
    assert approved.actor == f"grant:{grant.grant_id}" == used.actor
    assert (used.approval_id, used.runs, used.aggregate_id) == (later.id, 1, grant.id)
    assert grants.slot_of(later.request) == grant.id  # found by its key alone


@pytest.mark.parametrize(
    "change",
    [
        {"action": {"destination": "provider:other"}},
        {"action": {"provider": "apollo"}},
        {"action": {"provider": None}},
        {"action": {"kind": "column_run"}},
        {"requested_by": "service:bot"},
        {"risk_level": "high"},
        {"action": {"max_credits": 5}},  # over the grant's credits per run
        {"action": {"max_credits": None}},
        {"on_behalf_of": "user:ana"},  # the granter would approve what is done for her
    ],
    ids=lambda c: str(c),
)
def test_a_grant_never_covers_a_different_request(change: dict[str, Any]) -> None:
    grant = given()
    assert covered(grant, pending(**change), NOW) is None
    assert grants.why_not(grant, WS, pending(**change).request, NOW) is not None


def test_a_grant_never_covers_after_its_expiry_or_its_revoke() -> None:
    grant = given(hours=2)
    assert covered(grant, pending(), NOW + timedelta(hours=2) - timedelta(seconds=1)) is not None
    assert covered(grant, pending(), NOW + timedelta(hours=2)) is None
    revoke = commands.RevokeGrant(grant_id=grant.grant_id, by="user:bo")
    revoked = aggregates.evolve(grant, grants.revoke(grant, WS, revoke, NOW))
    assert covered(revoked, pending(), NOW + timedelta(seconds=1)) is None
    assert grants.status(revoked, WS, NOW) == "revoked"


def test_a_lowered_workspace_maximum_shortens_grants_already_given() -> None:
    grant = given(hours=8)
    lowered = workspace("acme", msgspec.structs.replace(SETTINGS, grants=Grants(max_hours=1)))
    assert covered(grant, pending(), NOW + timedelta(hours=2), ws=lowered) is None
    assert covered(grant, pending(), NOW + timedelta(hours=2)) is not None


def test_credits_per_run_default_to_the_approved_ceiling_and_bound_each_run() -> None:
    assert given().given.max_credits == 4
    wider = given(max_credits=10)
    assert covered(wider, pending(action={"max_credits": 10}), NOW) is not None
    assert covered(wider, pending(action={"max_credits": 10.5}), NOW) is None


def test_runs_per_day_are_counted_and_start_again_the_next_day() -> None:
    grant = given(hours=24, runs=2)
    for _ in range(2):
        produced = covered(grant, pending(), NOW)
        assert produced is not None
        grant = aggregates.evolve(grant, produced[0])
    assert covered(grant, pending(), NOW) is None
    assert grant.runs_today == 2
    tomorrow = NOW + timedelta(hours=13)
    assert covered(grant, pending(at=tomorrow), tomorrow) is not None


def test_a_covered_request_meets_the_budget_like_a_standing_permission() -> None:
    capped = workspace("acme", msgspec.structs.replace(SETTINGS, budget=Budget(cap=10)))
    grant = given(ws=capped)
    period = budget.period_of("month", NOW)
    held = budget.Budget(id=budget.budget_key("acme", period), version=1, workspace_id="acme",
                         period=period, committed=8, cap=10, reservations={})  # fmt: skip
    assert domain.approve_granted(pending(), capped, grant, held, NOW) is None
    room = msgspec.structs.replace(held, committed=6)
    produced = domain.approve_granted(pending(), capped, grant, room, NOW)
    assert produced is not None
    assert isinstance(produced[2], events.CreditsReserved)
    assert produced[2].committed == 10


def test_a_grant_is_bounded_by_the_workspace_and_the_role_it_names() -> None:
    with pytest.raises(Invalid) as too_long:
        given(hours=25)
    assert too_long.value.details["field"] == "grant.hours"
    off = workspace("acme", msgspec.structs.replace(SETTINGS, grants=Grants(max_hours=0)))
    with pytest.raises(Forbidden):
        given(ws=off)
    admins = workspace("acme", msgspec.structs.replace(SETTINGS, grants=Grants(granted_by="admin")))
    with pytest.raises(Forbidden) as not_admin:
        given(ws=admins)
    assert not_admin.value.details["rule"] == "role:admin"


def test_only_members_with_a_say_revoke_and_only_the_grant_in_force() -> None:
    grant = given()
    with pytest.raises(Forbidden):
        grants.revoke(grant, WS, commands.RevokeGrant(grant_id=grant.grant_id, by="user:nobody"),
                      NOW)  # fmt: skip
    with pytest.raises(NotFound):
        grants.revoke(grant, WS, commands.RevokeGrant(grant_id=uuid4(), by="user:bo"), NOW)


def test_grant_actor_is_a_valid_actor_everywhere() -> None:
    grant = given()
    msgspec.convert({"actor": grants.actor(grant)}, type=_HasActor)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"actor": "grant:"}, type=_HasActor)


class _HasActor(msgspec.Struct):
    actor: commands.Actor
