"""The Pydantic AI integration against the real command service and projection on a real
nats-server and SQLite: an agent (Pydantic AI's FunctionModel standing in for an LLM) calls a
paid tool that requires approval; a person decides through the command service; the run
continues from the saved message history with new objects (or a new process), and the tool runs
at most once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
from pydantic_ai import Agent, DeferredToolRequests, ToolApproved, ToolDenied
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from approvals.client import ApprovalPending, ApprovalsClient
from approvals.client.integrations.pydantic_ai import ask_for, results
from tests.e2e.agent_stack import (
    DENIALS,
    decide,
    decided_in_view,
    run_example,
    shown,
    url_of,
)
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from pathlib import Path


AGENT = "service:agent"
ENRICH = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 40}


def stand_in_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Calls the paid tool, then answers with what the tool returned (approved or denied)."""
    for part in messages[-1].parts:
        if isinstance(part, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"Done: {part.content}")])
    return ModelResponse(parts=[ToolCallPart("enrich_leads", {"rows": 40}, tool_call_id="c-1")])


def build_agent(ran: list[int]) -> Agent[None, str | DeferredToolRequests]:
    """A new agent each time, as a new process would build it; ``ran`` counts the side effect."""
    agent = Agent(FunctionModel(stand_in_model), output_type=[str, DeferredToolRequests])

    @agent.tool_plain(requires_approval=True)
    def enrich_leads(rows: int) -> str:
        ran.append(rows)
        return f"enriched {rows} rows"

    return agent


async def ask(client: ApprovalsClient, execution: str, **request: Any) -> tuple[bytes, str]:
    """Run until the agent stops for approval and ask; the history (JSON) and approval id."""
    run = await build_agent([]).run("Enrich this week's leads")
    assert isinstance(run.output, DeferredToolRequests)
    asked = await ask_for(client, run.output, requested_by=AGENT, skill_name="enrich-leads",
                          skill_execution_id=execution, actions={"enrich_leads": ENRICH},
                          **request)  # fmt: skip
    assert list(asked) == ["c-1"]
    approval_id = asked["c-1"]
    assert approval_id is not None
    return ModelMessagesTypeAdapter.dump_json(run.all_messages()), approval_id


async def resume(url: str, history: bytes, approval_id: str, ran: list[int]) -> str:
    """Continue with new objects and a new connection: nothing but the saved state carries over."""
    async with await ApprovalsClient.connect(url, "default", reply_timeout=10.0) as client:
        decided = await results(client, {"c-1": approval_id}, executor=AGENT, wait_s=10)
        run = await build_agent(ran).run(
            message_history=ModelMessagesTypeAdapter.validate_json(history),
            deferred_tool_results=decided,
        )
    assert isinstance(run.output, str)
    return run.output


async def test_approved_runs_the_tool_once_after_a_restart(stack: ApprovalsClient) -> None:
    history, approval_id = await ask(stack, "approved")
    # Check: nobody decided yet: results says so, redeems nothing, runs nothing.
    with pytest.raises(ApprovalPending) as pending:
        await results(stack, {"c-1": approval_id}, executor=AGENT)
    assert pending.value.approval_id == approval_id
    # Check: asking again for the same call finds the same approval.
    _, again = await ask(stack, "approved")
    assert again == approval_id
    await decide(stack, approval_id, "approve")
    ran: list[int] = []
    assert await resume(url_of(stack), history, approval_id, ran) == "Done: enriched 40 rows"
    assert ran == [40]

    async def redeemed() -> bool:  # the view follows the command service
        return (await stack.get(approval_id)).redeemed_at is not None

    await eventually(redeemed)
    # Check: the same decisions read again (a redelivery) deny the call: the tool does not rerun.
    redelivered = await results(stack, {"c-1": approval_id}, executor=AGENT)
    assert isinstance(redelivered.approvals["c-1"], ToolDenied)
    output = await resume(url_of(stack), history, approval_id, ran)
    assert "already used" in output
    assert ran == [40]


async def test_approved_with_edits_runs_the_tool_with_the_edited_arguments(
    stack: ApprovalsClient,
) -> None:
    history, approval_id = await ask(stack, "edited")
    await decide(stack, approval_id, "approve", edits={"proposed_payload": {"rows": 10}})
    decided = await results(stack, {"c-1": approval_id}, executor=AGENT)
    assert decided.approvals["c-1"] == ToolApproved(override_args={"rows": 10})
    ran: list[int] = []
    run = await build_agent(ran).run(
        message_history=ModelMessagesTypeAdapter.validate_json(history),
        deferred_tool_results=decided,
    )
    assert run.output == "Done: enriched 10 rows"
    assert ran == [10]


@pytest.mark.parametrize(("verb", "body", "told"), DENIALS)
async def test_a_denial_tells_the_model_the_persons_message_and_runs_nothing(
    stack: ApprovalsClient, verb: str, body: dict[str, Any], told: str
) -> None:
    history, approval_id = await ask(stack, verb)
    await shown(stack, approval_id)
    reply = await send(stack, verb, {"approval_id": approval_id, "approver": "user:ana", **body})
    assert reply["ok"], reply
    await decided_in_view(stack, approval_id)
    ran: list[int] = []
    assert await resume(url_of(stack), history, approval_id, ran) == told
    assert ran == []


async def test_an_expired_request_denies_the_call(stack: ApprovalsClient) -> None:
    """Expiry as the scheduler does it: the ``expire`` command once the request is due."""
    history, approval_id = await ask(stack, "expired", expires_in_s=1)
    await shown(stack, approval_id)

    async def expired() -> bool:
        reply = await send(stack, "expire", {"approval_id": approval_id, "by": "service:scheduler"})
        return bool(reply["ok"])

    await eventually(expired)
    await decided_in_view(stack, approval_id)
    ran: list[int] = []
    output = await resume(url_of(stack), history, approval_id, ran)
    assert output.startswith("Done: Nobody decided before the approval request expired")
    assert ran == []


@pytest.mark.timeout(120)
async def test_the_docs_example_asks_in_one_process_and_resumes_in_another(
    stack: ApprovalsClient, tmp_path: Path
) -> None:
    env = {**os.environ, "NATS_URL": url_of(stack), "AGENT_STATE": str(tmp_path / "state.json")}
    asked = (await run_example("pydantic-ai", "ask", env)).split()
    assert asked[0] == "asked"
    assert (await run_example("pydantic-ai", "resume", env)).startswith("still pending:")
    await decide(stack, asked[1], "approve")
    assert (await run_example("pydantic-ai", "resume", env)).splitlines() == [
        "spending credits on 40 rows",
        "Done: enriched 40 rows",
    ]
    # Check: a third process reading the same decision does not spend again.
    again = (await run_example("pydantic-ai", "resume", env)).splitlines()
    assert len(again) == 1
    assert "already used" in again[0]
