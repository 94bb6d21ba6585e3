"""Who the review queue hands a request to: those the workspace's rules would let decide it."""

from __future__ import annotations

from typing import Any

import msgspec

from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.reviews import may_review

SETTINGS = WorkspaceSettings(
    members={
        "user:admin": Member(roles=("admin",)),
        "user:ana": Member(roles=("requester", "approver"), aliases=("user:ana@example.com",)),
        "user:bob": Member(roles=("approver",)),
        "user:carol": Member(roles=("approver",)),
        "user:dave": Member(roles=("requester",)),
    },
    groups={"leads": ("user:carol",)},
    approvers={"critical": ("leads",)},
    bar_skill_owner=True,
    skill_owners={"outreach": "user:bob"},
)


def item(**changes: Any) -> dict[str, Any]:
    return {"requested_by": "service:agent", "on_behalf_of": None, "risk_level": "medium",
            "skill_name": "crm-sync", **changes}  # fmt: skip


def test_only_those_who_may_decide_are_handed_a_review() -> None:
    assert may_review(SETTINGS, "user:ana", item())
    assert not may_review(SETTINGS, "user:dave", item())  # not an approver
    assert not may_review(SETTINGS, "user:stranger", item())  # not a member
    assert not may_review(SETTINGS, "user:ana", item(requested_by="user:ana@example.com"))
    assert not may_review(SETTINGS, "user:ana", item(on_behalf_of="user:ana"))
    assert not may_review(SETTINGS, "user:bob", item(skill_name="outreach"))  # owns the skill
    assert may_review(SETTINGS, "user:carol", item(risk_level="critical"))
    assert not may_review(SETTINGS, "user:ana", item(risk_level="critical"))  # not in leads


def test_a_group_that_names_a_member_by_an_alias_hands_them_its_reviews() -> None:
    settings = msgspec.structs.replace(SETTINGS, groups={"leads": ("user:ana@example.com",)})
    assert may_review(settings, "user:ana", item(risk_level="critical"))
    assert not may_review(settings, "user:carol", item(risk_level="critical"))


def test_the_review_queue_applies_the_deciders_rules_only_people_approve() -> None:
    # A service may hold the approver role (it may veto), but only a person approves: the
    # queue hands it nothing, as governance would refuse its approval.
    assert not may_review(SETTINGS_WITH_A_BOT, "service:bot", item())


SETTINGS_WITH_A_BOT = msgspec.structs.replace(
    SETTINGS, members={**SETTINGS.members, "service:bot": Member(roles=("approver",))}
)
