"""OpenAI Agents SDK: tools whose calls people decide through Approvals.

A tool built with ``needs_approval=needs_approval(client, ...)`` asks this service (a dry run,
``check``) whether a call needs a person; when it does, the run stops with ``interruptions``.
``ask_for`` turns them into approval requests, and ``apply`` puts the decisions into the saved
``RunState`` (``approve``, or ``reject`` with the person's message) before the run continues:

    run = await Runner.run(agent, "...")
    asked = await ask_for(client, run.interruptions, requested_by=..., skill_name=...,
                          skill_execution_id=..., actions={"enrich": {...}})
    saved = run.to_state().to_string()  # keep it with ``asked``; the process may exit
    # ... a person decides, from Slack or the inbox ...
    state = await apply(client, await RunState.from_string(agent, saved), asked, executor=...)
    run = await Runner.run(agent, state)

Approved calls are redeemed in ``apply``, before the run continues: redemption is single use,
so the tool runs at most once per approval even when the same state is resumed twice; the
second time the call is rejected, saying why.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from approvals.client.errors import ApprovalPending
from approvals.client.integrations.tool_calls import redeem_once, why_not

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from agents import RunContextWrapper, RunState, ToolApprovalItem

    from approvals.client.bus import ApprovalsClient
    from approvals.client.http import ApprovalsHttpClient
    from approvals.schemas.commands import Action
    from approvals.schemas.queries import ApprovalView

__all__ = ["apply", "ask_for", "needs_approval"]


def needs_approval(
    client: ApprovalsClient | ApprovalsHttpClient,
    *,
    action: Action | dict[str, Any],
    requested_by: str,
    skill_name: str,
    risk_level: str = "medium",
    **request: Any,
) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]:
    """The tool's ``needs_approval``: true when this service says a person must decide the
    call (its arguments as the proposed payload); false when the policy or a standing
    permission allows it. A dry run: nothing is stored until ``ask_for``."""

    async def decide(_: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str) -> bool:
        reply = await client.check(
            **{"title": f"Run the tool for call {call_id}", "summary": "", **request},
            requested_by=requested_by, skill_name=skill_name, skill_execution_id=call_id,
            risk_level=risk_level, action=action, proposed_payload=arguments,
        )  # fmt: skip
        return reply.outcome == "approval_required"

    return decide


async def ask_for(
    client: ApprovalsClient | ApprovalsHttpClient,
    interruptions: Sequence[ToolApprovalItem],
    *,
    requested_by: str,
    skill_name: str,
    skill_execution_id: str,
    actions: Mapping[str, Action | dict[str, Any]],
    risk_level: str = "medium",
    **request: Any,
) -> dict[str, str | None]:
    """Ask for each interrupted call; ``{call_id: approval_id}``, plain JSON to keep with the
    saved state. ``actions`` says what each tool does (its ``Action``), by tool name; the
    call's arguments are the proposed payload. ``None`` for a call that turned out to need no
    approval. Idempotent: the key is the execution id and the tool call id."""
    unknown = sorted({str(i.tool_name) for i in interruptions} - set(actions))
    if unknown:
        raise ValueError(f"no action given for the tool(s) {', '.join(unknown)}: add to actions")
    asked: dict[str, str | None] = {}
    for item in interruptions:
        call_id, tool = str(item.call_id), str(item.tool_name)
        reply = await client.request(
            **{"title": f"Run the tool {tool}", "summary": "", **request},
            requested_by=requested_by, skill_name=skill_name,
            skill_execution_id=skill_execution_id, risk_level=risk_level,
            action=actions[tool], proposed_payload=json.loads(item.arguments or "{}"),
            idempotency_key=f"openai-agents:{skill_execution_id}:{call_id}",
        )  # fmt: skip
        needed = reply.outcome != "not_required" and reply.approval is not None
        asked[call_id] = str(reply.approval.id) if needed and reply.approval else None
    return asked


async def apply(
    client: ApprovalsClient | ApprovalsHttpClient,
    state: RunState[Any, Any],
    asked: Mapping[str, str | None],
    *,
    executor: str,
    wait_s: float = 0.0,
) -> RunState[Any, Any]:
    """Approve or reject each interrupted call in ``state`` by its decision; the state to run.

    Waits up to ``wait_s`` for each; raises ApprovalPending (nothing redeemed, the state
    unchanged) while any is still pending: load the saved state and call again later."""
    items = state.get_interruptions()
    decided: dict[str, ApprovalView] = {}
    for item in items:
        approval_id = asked.get(str(item.call_id))
        if approval_id is not None:
            decided[str(item.call_id)] = seen = await client.wait(approval_id, wait_s)
            if seen.status == "pending":
                raise ApprovalPending(str(seen.id), seen.web_url)
    for item in items:
        view = decided.get(str(item.call_id))
        refusal = None if view is None else await _refusal(client, view, executor)
        if refusal is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=refusal)
    return state


async def _refusal(
    client: ApprovalsClient | ApprovalsHttpClient, approval: ApprovalView, executor: str
) -> str | None:
    """None once the approved call is redeemed (single use); else the model's message."""
    if approval.status != "approved":
        return why_not(approval)
    action, payload = approval.action, approval.proposed_payload
    if approval.approved_action is not None and (
        approval.approved_payload != payload or approval.approved_action != action
    ):  # the SDK runs a call with its own arguments only: an edited version cannot run
        return (
            "An approver changed this call before approving it; it did not run. The approved"
            f" version: {json.dumps(approval.approved_payload)}."
        )
    assert action is not None, "the projection shows the action of every approval"
    return await redeem_once(client, approval, action, payload, executor)
