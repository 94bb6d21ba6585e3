"""Approve with edits, as pure rules: narrowing is allowed, widening or moving is ``invalid``
with the field named, the approval binds to the edited digest, and under a quorum votes for
different versions never add up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from approvals.schemas import commands, events
from approvals.schemas.digest import action_digest
from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.approvals import domain
from approvals.services.approvals.errors import Conflict, DigestMismatch, Invalid, TooLarge
from tests.workspaces import workspace

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
APPROVAL_ID = UUID("2c4f7d8e-2b3a-4c5d-8e9f-0a1b2c3d4e5f")
WS = workspace(
    "acme",
    WorkspaceSettings(
        members={
            "user:admin": Member(roles=("admin",)),
            "service:agent": Member(roles=("requester",)),
            "user:ann": Member(roles=("approver",)),
            "user:bob": Member(roles=("approver",)),
            "user:cy": Member(roles=("approver",)),
        }
    ),
)
ACTION = commands.Action(
    kind="crm_write", mode="live", provider="hubspot", destination="crm:contacts",
    scope=commands.Scope(table="leads", filters={"country": "FR"}, row_ids=("a", "b", "c"),
                         row_count=3),
    max_credits=10,
)  # fmt: skip
PAYLOAD = {"subject": "Hello", "count": 3}
SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "count": {"type": "integer", "maximum": 5}},
    "required": ["subject"],
}


def pending(quorum: int = 1, schema: dict[str, Any] | None = None) -> domain.Approval:
    cmd = commands.Request(
        requested_by="service:agent", skill_name="s", skill_execution_id="e", title="t",
        summary="", risk_level="high", action=ACTION, proposed_payload=PAYLOAD,
        payload_schema=schema,
    )  # fmt: skip
    event = domain.request(cmd, approval_id=APPROVAL_ID, workspace_id="acme", now=NOW,
                           default_expiry_s=3600, quorum=quorum)  # fmt: skip
    return domain.mutate(event, None)


def approve(
    approval: domain.Approval, who: str, edits: dict[str, Any] | None = None,
    digest: str | None = None,
) -> list[events.Event]:  # fmt: skip
    body = {"approval_id": str(approval.id), "approver": who,
            "digest": digest or approval.current.digest, "edits": edits}  # fmt: skip
    return domain.approve(approval, msgspec.convert(body, commands.Approve), NOW, WS)


def fold(approval: domain.Approval, produced: list[events.Event]) -> domain.Approval:
    for event in produced:
        approval = domain.mutate(event, approval)
    return approval


# -- widening is refused, per field --------------------------------------------------------


@pytest.mark.parametrize(
    ("edits", "field"),
    [
        ({"max_credits": 11}, "edits.max_credits"),
        ({"destination": "crm:accounts"}, "edits.destination"),
        ({"provider": "salesforce"}, "edits.provider"),
        ({"kind": "publish"}, "edits.kind"),
        ({"mode": "dry_run"}, "edits.mode"),
        ({"scope": {"row_ids": ["a", "z"]}}, "edits.scope.row_ids"),
        ({"scope": {"row_ids": ["a"], "row_count": 2}}, "edits.scope.row_count"),
        ({"scope": {"row_count": 4}}, "edits.scope.row_count"),
        ({"scope": {"filters": {"country": "DE"}}}, "edits.scope.filters"),
        ({"scope": {"filters": {"city": "Paris"}}}, "edits.scope.filters"),
        ({"scope": {"table": "accounts"}}, "edits.scope.table"),
    ],
)
def test_an_edit_that_widens_or_moves_the_action_is_invalid_naming_the_field(
    edits: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        approve(pending(), "user:ann", edits)
    assert refused.value.details["field"] == field
    assert field in refused.value.message


def test_a_narrower_edit_is_approved_and_bound_to_the_edited_digest() -> None:
    approval = pending()
    # Check a lower ceiling, a subset of rows and an added filter are approved
    edits = {"max_credits": 4, "proposed_payload": {"subject": "Hi", "count": 3},
             "scope": {"row_ids": ["c", "a"], "filters": {"country": "FR", "tier": 1}},
             "destination": "crm:contacts"}  # fmt: skip
    [approved] = approve(approval, "user:ann", edits)
    assert isinstance(approved, events.Approved)
    assert approved.action is not None
    assert approved.action.max_credits == 4
    assert approved.action.scope.row_ids == ("c", "a")
    assert approved.action.scope.row_count == 2
    assert approved.proposed_payload == {"subject": "Hi", "count": 3}
    # Check the digest is computed the same way, over the edited version
    assert approved.digest == action_digest(approved.action, approved.proposed_payload)
    assert approved.requested_digest == approval.request.digest != approved.digest
    # Check the change reads as a diff
    paths = {c.path: (c.before, c.after) for c in approved.changes}
    assert paths["/max_credits"] == (10, 4)
    assert paths["/scope/row_ids"] == (["a", "b", "c"], ["c", "a"])
    assert paths["/scope/row_count"] == (3, 2)
    assert paths["/proposed_payload/subject"] == ("Hello", "Hi")
    assert "/proposed_payload/count" not in paths
    # Check the approval now redeems only the edited version
    done = fold(approval, [approved])
    assert done.current.digest == approved.digest
    original = commands.Redeem(approval_id=APPROVAL_ID, digest=approval.request.digest,
                               executor="service:agent")  # fmt: skip
    with pytest.raises(DigestMismatch):
        domain.redeem(done, original, NOW)
    edited = msgspec.structs.replace(original, digest=approved.digest)
    assert domain.redeem(done, edited, NOW).digest == approved.digest


def test_without_edits_the_approval_names_the_requested_digest_twice() -> None:
    approval = pending()
    [approved] = approve(approval, "user:ann")
    assert isinstance(approved, events.Approved)
    assert approved.digest == approved.requested_digest == approval.request.digest
    assert approved.action is None
    assert approved.changes == ()


def test_an_edited_payload_must_match_the_payload_schema_naming_the_path() -> None:
    with pytest.raises(Invalid) as refused:
        approve(pending(schema=SCHEMA), "user:ann", {"proposed_payload": {"subject": "x",
                                                                          "count": 9}})  # fmt: skip
    assert refused.value.details["path"] == "/count"
    [approved] = approve(pending(schema=SCHEMA), "user:ann",
                         {"proposed_payload": {"subject": "x", "count": 2}})  # fmt: skip
    assert isinstance(approved, events.Approved)


def test_a_payload_schema_must_be_a_valid_bounded_schema_and_match_the_payload() -> None:
    with pytest.raises(Invalid) as refused:
        pending(schema={"type": "not-a-type"})
    assert refused.value.details["field"] == "payload_schema"
    with pytest.raises(Invalid) as mismatch:
        pending(schema={**SCHEMA, "required": ["missing"]})
    assert mismatch.value.details["field"] == "proposed_payload"
    with pytest.raises(TooLarge):
        pending(schema={"type": "object", "description": "x" * 20_000})


def test_unknown_edit_fields_are_refused_at_the_edge() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `preview_url`"):
        msgspec.convert({"preview_url": "x"}, commands.Edits)


# -- quorum: an edit is a new proposal ----------------------------------------------------


def test_votes_for_different_versions_never_add_up() -> None:
    approval = pending(quorum=2)
    # Check ann votes for the request as asked
    approval = fold(approval, approve(approval, "user:ann"))
    assert approval.votes == ("user:ann",)
    # Check bob's edit is a new proposal: ann's vote does not count toward it
    produced = approve(approval, "user:bob", {"max_credits": 5})
    [vote] = produced
    assert isinstance(vote, events.VoteCast)
    assert vote.action is not None
    assert vote.voter == "user:bob"
    approval = fold(approval, produced)
    assert approval.votes == ("user:bob",)
    # Check a vote for the version no longer being decided is a digest mismatch
    with pytest.raises(DigestMismatch):
        approve(approval, "user:cy", digest=approval.request.digest)
    # Check cy's edit to yet another version starts again
    approval = fold(approval, approve(approval, "user:cy", {"max_credits": 3}))
    assert approval.votes == ("user:cy",)
    # Check ann may vote for the new version; it then meets the quorum of two
    [approved] = approve(approval, "user:ann")
    assert isinstance(approved, events.Approved)
    assert approved.votes == ("user:cy", "user:ann")
    assert approved.action is not None
    assert approved.action.max_credits == 3


def test_the_same_edit_again_is_a_vote_for_the_same_version() -> None:
    approval = pending(quorum=2)
    approval = fold(approval, approve(approval, "user:bob", {"max_credits": 5}))
    with pytest.raises(Conflict):
        approve(approval, "user:bob", {"max_credits": 5})
    [approved] = approve(approval, "user:ann", {"max_credits": 5})
    assert isinstance(approved, events.Approved)
    assert approved.votes == ("user:bob", "user:ann")
    assert approved.requested_digest == approval.request.digest
