"""What requires approval: the seed's table, row by row. Pure.

| action                                                   | approval |
|----------------------------------------------------------|----------|
| paid provider call                                       | yes      |
| column run on an AI/tool column with credits > 0         | yes      |
| CRM write, outbound enrollment, LinkedIn action, campaign sync | yes |
| workflow fire in live mode touching any of the above     | yes      |
| workflow fire in live mode that only reads               | no       |
| dry_run / smoke_test anything                            | no       |
| read-only commands                                       | no       |

Where the table is silent the answer is the safe one: an action that writes somewhere (``publish``,
``other``) needs approval, a column run that does not declare zero credits is taken to spend
them, and a workflow fire that does not say what it touches is taken to write. A live action
that consumes credits must carry a credit ceiling (``credit_ceiling_required``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from approvals.services.approvals.errors import CreditCeilingRequired

if TYPE_CHECKING:
    from approvals.schemas.commands import Action
    from approvals.schemas.types import ActionKind

WRITES: frozenset[str] = frozenset(
    {"crm_write", "outbound_enrollment", "linkedin_action", "campaign_sync", "publish", "other"}
)


class PolicyAnswer(msgspec.Struct, frozen=True, kw_only=True):
    required: bool
    row: str  # which row of the table answered
    reason: str


def evaluate(action: Action) -> PolicyAnswer:
    """The table's answer for ``action``; raises CreditCeilingRequired where one is missing."""
    if action.mode != "live":
        return PolicyAnswer(
            required=False, row="not_live", reason=f"{action.mode} never needs approval"
        )
    if action.kind == "read":
        return PolicyAnswer(required=False, row="read", reason="reads never need approval")
    if action.kind == "workflow_fire":
        return _workflow(action)
    answer = _kind(action.kind, action)
    if _spends(action.kind, action) and action.max_credits is None:
        raise CreditCeilingRequired(
            "a live action that consumes credits needs a credit ceiling (max_credits)",
            kind=action.kind,
        )
    return answer


def requires_approval(action: Action) -> bool:
    return evaluate(action).required


def _kind(kind: ActionKind, action: Action) -> PolicyAnswer:
    if kind == "provider_call":
        return PolicyAnswer(required=True, row="provider_call", reason="a paid provider call")
    if kind == "column_run":
        if _spends(kind, action):
            return PolicyAnswer(
                required=True, row="column_run_credits", reason="a column run that uses credits"
            )
        return PolicyAnswer(
            required=False, row="column_run_free", reason="a column run that uses no credits"
        )
    if kind in WRITES:
        return PolicyAnswer(required=True, row="external_write", reason=f"{kind} writes outside")
    return PolicyAnswer(required=False, row="read", reason="reads never need approval")


def _spends(kind: ActionKind, action: Action) -> bool:
    if kind == "provider_call":
        return True
    if kind == "column_run":
        declared_free = action.expected_credits == 0 and not action.max_credits
        return not declared_free
    return False


def _workflow(action: Action) -> PolicyAnswer:
    if action.touches is None:
        return PolicyAnswer(
            required=True,
            row="workflow_unknown",
            reason="a live workflow fire that does not say what it touches may write",
        )
    touched = [k for k in action.touches if k != "workflow_fire"]
    needing: list[str] = [k for k in touched if _kind(k, action).required]
    if "workflow_fire" in action.touches:
        needing.append("workflow_fire")  # a nested fire: unknown, so it may write
    if not needing:
        return PolicyAnswer(
            required=False, row="workflow_reads", reason="a live workflow fire that only reads"
        )
    if any(_spends(k, action) for k in touched) and action.max_credits is None:
        raise CreditCeilingRequired(
            "a live workflow that consumes credits needs a credit ceiling (max_credits)",
            kind=action.kind,
            touches=list(action.touches),
        )
    return PolicyAnswer(
        required=True,
        row="workflow_writes",
        reason=f"a live workflow fire that touches {', '.join(sorted(set(needing)))}",
    )
