"""Quorum as properties: whatever sequence of votes, rejections, aliases and delegations arrives,
no request is approved by fewer than N distinct allowed people, and one allowed rejection
rejects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import event, given, settings
from hypothesis import strategies as st

from approvals.schemas import commands, events
from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.approvals import domain, governance
from approvals.services.approvals.errors import ApprovalError
from tests.workspaces import workspace

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
APPROVAL_ID = UUID("1c4f7d8e-2b3a-4c5d-8e9f-0a1b2c3d4e5f")
PEOPLE = ("user:p0", "user:p1", "user:p2", "user:p3", "user:p4")
# Allowed to approve high risk: the `deciders` group. p4 is an approver outside it.
SETTINGS = WorkspaceSettings(
    members={
        "user:admin": Member(roles=("admin",)),
        "service:agent": Member(roles=("requester",)),
        "user:p0": Member(roles=("requester", "approver"), aliases=("user:p0-alias",)),
        "user:p1": Member(roles=("approver",), aliases=("user:p1-alias",)),
        "user:p2": Member(roles=("approver",)),
        "user:p3": Member(roles=("approver",)),
        "user:p4": Member(roles=("approver",)),
        "service:bot": Member(roles=("approver",)),
    },
    groups={"deciders": ("user:p0", "user:p1", "user:p2", "user:p3")},
    approvers={"high": ("deciders",)},
)
ALLOWED = {"user:p0", "user:p1", "user:p2", "user:p3"}
NAMES = (*PEOPLE, "user:p0-alias", "user:p1-alias", "service:bot", "user:stranger")
ALIASES = {"user:p0-alias": "user:p0", "user:p1-alias": "user:p1"}


def ws_with_delegations(pairs: list[tuple[str, str]]) -> governance.Workspace:
    base = workspace("acme", SETTINGS)
    grants = tuple(
        governance.Delegation(delegator=a, delegate=b, ends_at=NOW + timedelta(days=1))
        for a, b in pairs
        if a != b
    )
    return governance.Workspace(
        id=base.id, workspace_id="acme", version=1, settings=SETTINGS,
        configured_by="user:admin", configured_at=NOW, delegations=grants,
    )  # fmt: skip


def pending(quorum: int, requested_by: str) -> domain.Approval:
    request = commands.Request(
        requested_by=requested_by,
        skill_name="s",
        skill_execution_id="e",
        title="t",
        summary="",
        risk_level="high",
        action=commands.Action(kind="crm_write", mode="live"),
    )
    event = domain.request(
        request, approval_id=APPROVAL_ID, workspace_id="acme", now=NOW,
        default_expiry_s=3600, quorum=quorum,
    )  # fmt: skip
    return domain.mutate(event, None)


Step = tuple[str, str, str | None]  # (approve|reject, signed as, for member)
steps = st.lists(
    st.tuples(
        st.sampled_from(["approve", "approve", "approve", "reject"]),
        st.sampled_from(NAMES),
        st.one_of(st.none(), st.sampled_from(PEOPLE)),
    ),
    max_size=12,
)
delegations = st.lists(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)), max_size=4)


def run(approval: domain.Approval, ws: governance.Workspace, sequence: list[Step]) -> Any:
    """Apply each step; the accepted events, in order, and the final approval."""
    accepted: list[tuple[Step, events.Event]] = []
    for step in sequence:
        verb, name, for_member = step
        try:
            if verb == "approve":
                approve = commands.Approve(
                    approval_id=APPROVAL_ID,
                    approver=name,
                    digest=approval.request.digest,
                    for_member=for_member,
                )
                produced = domain.approve(approval, approve, NOW, ws)
            else:
                reject = commands.Reject(
                    approval_id=APPROVAL_ID, approver=name, for_member=for_member
                )
                produced = [domain.reject(approval, reject, NOW, ws)]
        except ApprovalError:
            continue
        for made in produced:
            approval = domain.mutate(made, approval)
            accepted.append((step, made))
    return accepted, approval


@settings(max_examples=400, deadline=None)
@given(
    quorum=st.integers(1, 4),
    requester=st.sampled_from(["service:agent", "user:p0"]),
    sequence=steps,
    grants=delegations,
)
def test_no_sequence_approves_with_fewer_than_the_quorum_of_distinct_allowed_people(
    quorum: int, requester: str, sequence: list[Step], grants: list[tuple[str, str]]
) -> None:
    ws = ws_with_delegations(grants)
    accepted, final = run(pending(quorum, requester), ws, sequence)
    approvals = [
        (step, e) for step, e in accepted if isinstance(e, events.VoteCast | events.Approved)
    ]
    event(f"{final.status} with {len(approvals)} vote(s) of {quorum}")
    people = {ALIASES.get(step[1], step[1]) for step, _ in approvals}  # who acted
    counted = [step[2] or ALIASES.get(step[1], step[1]) for step, _ in approvals]  # whose vote
    # One person, one vote, in whatever capacity.
    assert len(set(counted)) == len(counted)
    assert len(people) == len(approvals)
    # Nobody takes part in two votes, whether in person or standing in for someone.
    parties = [{ALIASES.get(step[1], step[1]), step[2] or step[1]} for step, _ in approvals]
    for i, one in enumerate(parties):
        for other in parties[i + 1 :]:
            assert not one & {ALIASES.get(name, name) for name in other}
    # Every vote counted is an allowed person's, and never the requester's.
    assert set(counted) <= ALLOWED - {requester}
    assert requester not in people
    if final.status == "approved":
        assert len(set(counted)) >= quorum
        assert final.votes == tuple(counted)
        assert isinstance(accepted[-1][1], events.Approved)
    else:
        assert len(counted) < quorum or final.status == "rejected"


@settings(max_examples=300, deadline=None)
@given(quorum=st.integers(1, 4), before=steps, rejecter=st.sampled_from(sorted(ALLOWED)))
def test_any_allowed_rejection_rejects_a_pending_request(
    quorum: int, before: list[Step], rejecter: str
) -> None:
    ws = ws_with_delegations([])
    _, approval = run(pending(quorum, "service:agent"), ws, before)
    accepted, final = run(approval, ws, [("reject", rejecter, None)])
    if approval.status == "pending":
        assert final.status == "rejected"
        assert [type(e) for _, e in accepted] == [events.Rejected]
    else:
        assert accepted == []
        assert final == approval
