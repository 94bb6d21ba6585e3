"""Whether a standing permission approves a request at once, and what happens when that grant
meets the spend cap: a pure decision of the workspace, the day's allowance, the period's budget,
the request and the time (the application only loads them and saves what it returns)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from approvals.schemas import commands, events
from approvals.schemas.workspace import Budget, StandingPermission
from approvals.services.approvals import budget, domain, governance
from tests.workspaces import SETTINGS, workspace

APPROVAL_ID = UUID("5a0c7d4e-2b1f-4c3a-8d9e-0f1a2b3c4d5e")
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RULE = StandingPermission(name="small-enrichment", kinds=("provider_call",), risk_levels=("low",),
                          max_credits_per_run=5, max_credits_per_day=12)  # fmt: skip


def ws(**changes: Any) -> governance.Workspace:
    return workspace("acme", msgspec.structs.replace(SETTINGS, standing=(RULE,), **changes))


def pending(credits: float = 4) -> domain.Approval:
    cmd = commands.Request(
        requested_by="service:enricher", skill_name="enrich", skill_execution_id="e1",
        title="Enrich 4 rows", summary="Enrich 4 rows", risk_level="low",
        action=commands.Action(kind="provider_call", mode="live", provider="clearbit",
                               destination="provider:clearbit", max_credits=credits),
    )  # fmt: skip
    requested = domain.request(cmd, approval_id=APPROVAL_ID, workspace_id="acme", now=NOW,
                               default_expiry_s=3600)  # fmt: skip
    return domain.mutate(requested, None)


def held(committed: float, cap: float) -> budget.Budget:
    period = budget.period_of("month", NOW)
    return budget.Budget(id=budget.budget_key("acme", period), version=3, workspace_id="acme",
                         period=period, committed=committed, cap=cap, reservations={})  # fmt: skip


def test_a_standing_permission_approves_at_once_and_records_its_use() -> None:
    granted = domain.approve_standing(pending(), ws(), RULE, None, None, NOW)
    assert granted is not None
    used, approved = granted
    assert isinstance(used, events.StandingUsed)
    assert (used.rule, used.credits, used.total, used.approval_id) == (RULE.name, 4, 4, APPROVAL_ID)
    assert isinstance(approved, events.Approved)
    assert (approved.actor, approved.version, approved.budget_period) == (
        "policy:small-enrichment", 2, None)  # fmt: skip


def test_the_grant_holds_its_ceiling_against_the_budget_in_the_same_decision() -> None:
    capped = ws(budget=Budget(period="month", cap=100))
    granted = domain.approve_standing(pending(), capped, RULE, None, held(90, 100), NOW)
    assert granted is not None
    _, approved, reserved = granted
    assert isinstance(reserved, events.CreditsReserved)
    assert (reserved.credits, reserved.committed, reserved.version) == (4, 94, 4)
    assert isinstance(approved, events.Approved)
    assert approved.budget_period == reserved.period == budget.period_of("month", NOW)


def test_a_grant_the_cap_cannot_take_leaves_the_request_to_a_person() -> None:
    capped = ws(budget=Budget(period="month", cap=100))
    assert domain.approve_standing(pending(), capped, RULE, None, held(98, 100), NOW) is None


def test_a_day_whose_allowance_is_spent_leaves_the_request_to_a_person() -> None:
    day = NOW.date().isoformat()
    spent = governance.Allowance(id=governance.allowance_key("acme", RULE.name, day), version=2,
                                 used=10)  # fmt: skip
    assert domain.approve_standing(pending(), ws(), RULE, spent, None, NOW) is None
    assert domain.approve_standing(pending(credits=2), ws(), RULE, spent, None, NOW) is not None
