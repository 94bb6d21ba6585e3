"""Approve with edits through every service on a real nats-server and SQLite: the gate's body
runs the edited payload, the receipt verifies and names both digests, the original digest no
longer redeems, and get/wait return the approved version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from approvals.client import ApprovalPending, ApprovalsClient
from approvals.schemas.digest import action_digest
from tests.e2e.test_client import ASK, LIVE, stack
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from approvals.schemas.queries import ApprovalView

__all__ = ["stack"]  # the fixture, shared with the client's tests


async def edit_and_approve(
    client: ApprovalsClient, approval_id: str, edits: Any, digest: str | None = None
) -> Any:
    digest = digest or (await client.get(approval_id)).digest
    return await send(client, "approve", {"approval_id": approval_id, "approver": "user:ana",
                                          "digest": digest, "edits": edits})  # fmt: skip


async def test_the_gate_runs_the_body_with_the_edited_payload(stack: ApprovalsClient) -> None:
    flow: dict[str, Any] = {**ASK, "skill_execution_id": "edit", "action": LIVE,
                            "payload": {"rows": [1, 2, 3], "note": "all"}}  # fmt: skip
    with pytest.raises(ApprovalPending) as pending:
        async with stack.gate(**flow, wait_s=0.1):
            pytest.fail("ran before a decision")
    approval_id = pending.value.approval_id
    # Check: a person approves a narrower version (a lower ceiling, another payload)
    edits = {"max_credits": 15, "proposed_payload": {"rows": [2], "note": "one"}}
    reply = await edit_and_approve(stack, approval_id, edits)
    assert reply["ok"] is True, reply
    approved_digest = reply["approval"]["approved_digest"]
    # Check: the body runs with the approved version, not with what it asked for
    async with stack.gate(**flow, wait_s=10) as run:
        assert run.payload == {"rows": [2], "note": "one"}
        assert run.action.max_credits == 15
        assert run.approval is not None

    async def redeemed() -> bool:  # the view follows the command service
        return (await stack.get(approval_id)).redeemed_at is not None

    await eventually(redeemed)
    view: ApprovalView = await stack.get(approval_id)
    assert view.approved_digest == approved_digest != view.digest
    assert view.approved_payload == {"rows": [2], "note": "one"}
    assert [c.path for c in view.changes] == [
        "/max_credits", "/proposed_payload/note", "/proposed_payload/rows",
    ]  # fmt: skip
    # Check: the receipt verifies and names both digests
    assert view.receipt is not None
    body = await stack.verify_receipt(view.receipt)
    assert (body.digest, body.requested_digest) == (approved_digest, view.digest)
    assert body.max_credits == 15


async def test_the_original_digest_does_not_redeem_an_edited_approval(
    stack: ApprovalsClient,
) -> None:
    asked = await stack.request(**{**ASK, "skill_execution_id": "orig"}, action=LIVE,
                                proposed_payload={"rows": [1, 2]})  # fmt: skip
    assert asked.approval is not None
    approval_id = str(asked.approval.id)
    reply = await edit_and_approve(stack, approval_id, {"proposed_payload": {"rows": [1]}},
                                   asked.approval.digest)  # fmt: skip
    assert reply["ok"] is True, reply
    original = action_digest(asked.approval.action, {"rows": [1, 2]})
    refused = await send(stack, "redeem", {"approval_id": approval_id, "digest": original,
                                           "executor": "service:agent"})  # fmt: skip
    assert refused["error"]["code"] == "digest_mismatch"
    # Check: with the action and payload, the refusal names the payload as what differs
    refused = await send(stack, "redeem", {"approval_id": approval_id, "digest": original,
                                           "executor": "service:agent", "action": LIVE,
                                           "proposed_payload": {"rows": [1, 2]}})  # fmt: skip
    assert refused["error"]["details"]["differs"] == ["proposed_payload"]
    # Check: the edited version redeems
    done = await send(stack, "redeem", {"approval_id": approval_id,
                                        "digest": reply["approval"]["approved_digest"],
                                        "executor": "service:agent"})  # fmt: skip
    assert done["ok"] is True, done


async def test_a_widening_edit_is_invalid_and_stores_nothing(stack: ApprovalsClient) -> None:
    asked = await stack.request(**{**ASK, "skill_execution_id": "wide"}, action=LIVE)
    assert asked.approval is not None
    approval_id = str(asked.approval.id)
    for edits, field in (({"max_credits": 41}, "edits.max_credits"),
                         ({"destination": "elsewhere"}, "edits.destination")):  # fmt: skip
        refused = await edit_and_approve(stack, approval_id, edits, asked.approval.digest)
        assert refused["error"]["code"] == "invalid"
        assert refused["error"]["details"]["field"] == field
    assert (await stack.wait(approval_id, 0.1)).status == "pending"
