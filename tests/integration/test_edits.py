"""Approve with edits through the command service, on SQLite and PostgreSQL: under a quorum an
edit is a new proposal, votes for different versions never add up, the history shows who
proposed which version, a widening edit stores nothing, and the receipt names both digests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from approvals.schemas.signatures import verify
from tests.helpers import assert_error, send
from tests.integration.test_governance import approve, ask, gov, history
from tests.workspaces import approval_notifications

if TYPE_CHECKING:
    from tests.integration.test_governance import Started

__all__ = ["gov"]  # the fixture: workspace ``gov``, quorum 2 at high risk

ROWS = {"kind": "crm_write", "mode": "live", "destination": "hubspot", "max_credits": 30,
        "scope": {"table": "leads", "row_ids": ["r1", "r2", "r3"], "row_count": 3}}  # fmt: skip


async def test_votes_for_different_versions_never_add_up(gov: Started) -> None:
    service, client = gov
    approval = await ask(client, risk_level="high", action=ROWS, proposed_payload={"n": 3})
    # Check: ana votes for the request as asked
    first = await send(client, "approve", approve(approval, "user:ana"))
    assert first["outcome"] == "vote_cast", first
    # Check: bob's edit is a new proposal: ana's vote does not count toward it
    edits = {"scope": {"row_ids": ["r1", "r2"]}, "max_credits": 20, "proposed_payload": {"n": 2}}
    second = await send(client, "approve", approve(approval, "user:bob", edits=edits))
    assert (second["outcome"], second["approval"]["status"]) == ("vote_cast", "pending"), second
    proposal = second["approval"]["approved_digest"]
    assert proposal != approval["digest"]
    assert second["approval"]["votes"] == ["user:bob"]
    # Check: a vote for the version no longer decided is refused, not counted
    stale = await send(client, "approve", approve(approval, "user:carol"))
    assert_error(stale, "digest_mismatch")
    # Check: carol votes for bob's version: two votes for one version approve it
    third = await send(client, "approve", {**approve(approval, "user:carol"), "digest": proposal})
    assert third["outcome"] == "approved", third
    assert third["approval"]["votes"] == ["user:bob", "user:carol"]
    assert third["approval"]["approved_action"]["scope"]["row_count"] == 2
    # Check: the history shows who proposed which version and the change, as a diff
    events = history(service, approval["id"])
    assert [e.event_type for e in events] == ["requested", "vote_cast", "vote_cast", "approved"]
    assert (events[1].voter, events[1].digest, events[1].action) == (
        "user:ana", approval["digest"], None,
    )  # fmt: skip
    assert (events[2].voter, events[2].digest) == ("user:bob", proposal)
    assert {c.path for c in events[2].changes} == {
        "/max_credits", "/scope/row_count", "/scope/row_ids", "/proposed_payload/n",
    }  # fmt: skip
    approved = events[3]
    assert (approved.digest, approved.requested_digest) == (proposal, approval["digest"])
    # Check: the receipt, signed over the approved version, names both digests
    receipt = third["approval"]["receipt"]
    assert (receipt["digest"], receipt["requested_digest"]) == (proposal, approval["digest"])
    assert receipt["max_credits"] == 20
    assert approved.receipt is not None
    body = verify(approved.receipt, [service.app.signer.public_key()])  # type: ignore[union-attr]
    assert body.requested_digest == approval["digest"]


async def test_a_widening_edit_is_invalid_naming_the_field_and_stores_nothing(
    gov: Started,
) -> None:
    service, client = gov
    approval = await ask(client, action=ROWS)
    assert service.app is not None
    before = len(approval_notifications(service.app))
    for edits, field in (
        ({"max_credits": 31}, "edits.max_credits"),
        ({"scope": {"row_ids": ["r1", "r9"]}}, "edits.scope.row_ids"),
        ({"destination": "salesforce"}, "edits.destination"),
    ):
        body = approve(approval, "user:bob", edits=edits)
        refused: dict[str, Any] = await send(client, "approve", body)
        assert_error(refused, "invalid")
        assert refused["error"]["details"]["field"] == field, refused
    assert len(approval_notifications(service.app)) == before
