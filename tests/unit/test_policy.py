"""What needs approval: one test per row of the seed's table, and the credit ceiling rule."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.schemas.commands import Action
from approvals.services.approvals.errors import CreditCeilingRequired
from approvals.services.approvals.policy import evaluate


def live(kind: str, **fields: Any) -> Action:
    return Action(kind=kind, mode="live", **fields)  # type: ignore[arg-type]


def test_row_paid_provider_call_needs_approval() -> None:
    answer = evaluate(live("provider_call", provider="clearbit", max_credits=10))
    assert (answer.required, answer.row) == (True, "provider_call")


def test_row_column_run_with_credits_needs_approval() -> None:
    answer = evaluate(live("column_run", expected_credits=3, max_credits=10))
    assert (answer.required, answer.row) == (True, "column_run_credits")


def test_row_column_run_without_credits_does_not_need_approval() -> None:
    answer = evaluate(live("column_run", expected_credits=0))
    assert (answer.required, answer.row) == (False, "column_run_free")


def test_a_column_run_that_does_not_declare_its_credits_is_taken_to_spend_them() -> None:
    with pytest.raises(CreditCeilingRequired):
        evaluate(live("column_run"))
    assert evaluate(live("column_run", max_credits=5)).required


@pytest.mark.parametrize(
    "kind", ["crm_write", "outbound_enrollment", "linkedin_action", "campaign_sync"]
)
def test_row_external_writes_need_approval(kind: str) -> None:
    answer = evaluate(live(kind))
    assert (answer.required, answer.row) == (True, "external_write")


@pytest.mark.parametrize(
    "touches",
    [("crm_write",), ("read", "outbound_enrollment"), ("linkedin_action",), ("campaign_sync",)],
)
def test_row_live_workflow_fire_touching_a_write_needs_approval(touches: tuple[str, ...]) -> None:
    answer = evaluate(live("workflow_fire", touches=touches))
    assert (answer.required, answer.row) == (True, "workflow_writes")


def test_row_live_workflow_fire_touching_a_paid_call_needs_approval_and_a_ceiling() -> None:
    with pytest.raises(CreditCeilingRequired):
        evaluate(live("workflow_fire", touches=("read", "provider_call")))
    answer = evaluate(live("workflow_fire", touches=("provider_call",), max_credits=20))
    assert (answer.required, answer.row) == (True, "workflow_writes")


def test_row_live_workflow_fire_that_only_reads_does_not_need_approval() -> None:
    answer = evaluate(live("workflow_fire", touches=("read", "read")))
    assert (answer.required, answer.row) == (False, "workflow_reads")


def test_a_live_workflow_fire_that_does_not_say_what_it_touches_needs_approval() -> None:
    answer = evaluate(live("workflow_fire"))
    assert (answer.required, answer.row) == (True, "workflow_unknown")


@pytest.mark.parametrize("mode", ["dry_run", "smoke_test"])
@pytest.mark.parametrize(
    "kind",
    ["provider_call", "column_run", "crm_write", "outbound_enrollment", "linkedin_action",
     "campaign_sync", "workflow_fire", "read", "publish", "other"],
)  # fmt: skip
def test_row_dry_run_and_smoke_test_never_need_approval(kind: str, mode: str) -> None:
    # Not even a credit ceiling: nothing is spent.
    answer = evaluate(Action(kind=kind, mode=mode))  # type: ignore[arg-type]
    assert (answer.required, answer.row) == (False, "not_live")


def test_row_reads_never_need_approval() -> None:
    answer = evaluate(live("read"))
    assert (answer.required, answer.row) == (False, "read")


def test_a_live_paid_call_without_a_credit_ceiling_is_refused() -> None:
    with pytest.raises(CreditCeilingRequired) as refused:
        evaluate(live("provider_call", provider="clearbit"))
    assert refused.value.code == "credit_ceiling_required"
