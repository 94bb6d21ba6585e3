"""Pydantic AI deferred tools, decided by people through Approvals.

A tool marked ``requires_approval=True`` ends the agent run with ``DeferredToolRequests``;
``ask_for`` turns each of its approval-requiring calls into an approval request, and
``results`` turns the decisions into the ``DeferredToolResults`` the next run takes:

    asked = await ask_for(client, run.output, requested_by=..., skill_name=...,
                          skill_execution_id=..., actions={"enrich": {...}})
    # ... store ``asked`` and the message history; a person decides, from Slack or the inbox ...
    decided = await results(client, asked, executor=..., wait_s=30)
    await agent.run(message_history=history, deferred_tool_results=decided)

Approved calls are redeemed here, before the run continues: redemption is single use, so the
tool runs at most once per approval even if ``results`` is called again for the same calls (a
retried job, a redelivered message); the second time the call is denied, saying why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_ai import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied

from approvals.client.errors import ApprovalPending
from approvals.client.integrations.tool_calls import redeem_once, why_not

if TYPE_CHECKING:
    from collections.abc import Mapping

    from approvals.client.flow import Caller
    from approvals.schemas.commands import Action
    from approvals.schemas.queries import ApprovalView

__all__ = ["ask_for", "results"]


async def ask_for(
    client: Caller,
    requests: DeferredToolRequests,
    *,
    requested_by: str,
    skill_name: str,
    skill_execution_id: str,
    actions: Mapping[str, Action | dict[str, Any]],
    risk_level: str = "medium",
    **request: Any,
) -> dict[str, str | None]:
    """Ask for each call awaiting approval; ``{tool_call_id: approval_id}``, plain JSON to keep
    with the message history. ``actions`` says what each tool does (its ``Action``), by tool
    name; the call's arguments are the proposed payload. ``None`` for a call that needs no
    approval (the policy, or a standing permission, allows it).

    Idempotent: asking again for the same calls, from any process, finds the same approvals
    (the idempotency key is the execution id and the tool call id)."""
    unknown = sorted({c.tool_name for c in requests.approvals} - set(actions))
    if unknown:
        raise ValueError(f"no action given for the tool(s) {', '.join(unknown)}: add to actions")
    asked: dict[str, str | None] = {}
    for call in requests.approvals:
        reply = await client.request(
            **{"title": f"Run the tool {call.tool_name}", "summary": "", **request},
            requested_by=requested_by, skill_name=skill_name,
            skill_execution_id=skill_execution_id, risk_level=risk_level,
            action=actions[call.tool_name], proposed_payload=call.args_as_dict(),
            idempotency_key=f"pydantic-ai:{skill_execution_id}:{call.tool_call_id}",
        )  # fmt: skip
        needed = reply.outcome != "not_required" and reply.approval is not None
        asked[call.tool_call_id] = str(reply.approval.id) if needed and reply.approval else None
    return asked


async def results(
    client: Caller, asked: Mapping[str, str | None], *, executor: str, wait_s: float = 0.0
) -> DeferredToolResults:
    """The decisions as ``DeferredToolResults``, once every call is decided: approved (with the
    approver's edited arguments as ``override_args``), or denied with the person's message.

    Waits up to ``wait_s`` for each; raises ApprovalPending (nothing redeemed) while any is
    still pending: call again later with the same ``asked``."""
    decided: dict[str, ApprovalView] = {}
    for call_id, approval_id in asked.items():
        if approval_id is not None:
            decided[call_id] = approval = await client.wait(approval_id, wait_s)
            if approval.status == "pending":
                raise ApprovalPending(str(approval.id), approval.web_url)
    out = DeferredToolResults()
    for call_id in asked:
        view = decided.get(call_id)
        if view is None:  # no approval needed
            out.approvals[call_id] = ToolApproved()
        elif view.status == "approved":
            out.approvals[call_id] = await _redeemed(client, view, executor)
        else:
            out.approvals[call_id] = ToolDenied(why_not(view))
    return out


async def _redeemed(
    client: Caller, approval: ApprovalView, executor: str
) -> ToolApproved | ToolDenied:
    """Redeem the approved version (single use) and approve the call with its arguments."""
    action, payload = approval.action, approval.proposed_payload
    if approval.approved_action is not None:  # the version approved, edited or not
        action, payload = approval.approved_action, approval.approved_payload
    assert action is not None, "the projection shows the action of every approval"
    used = await redeem_once(client, approval, action, payload, executor)
    if used is not None:
        return ToolDenied(used)
    edited = payload != approval.proposed_payload and isinstance(payload, dict)
    return ToolApproved(override_args=payload if edited else None)
