"""The OpenAI Agents SDK integration against the real command service and projection on a real
nats-server and SQLite: an agent (a stand-in model in place of an LLM: no network, no key) calls
a paid tool whose ``needs_approval`` asks this service; a person decides through the command
service; the run continues from the saved ``RunState`` with new objects (or a new process), and
the tool runs at most once."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest
from agents import Agent, Runner, RunState, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from approvals.client import ApprovalPending, ApprovalsClient
from approvals.client.integrations.openai_agents import apply, ask_for, needs_approval
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
    from collections.abc import AsyncIterator
    from pathlib import Path

AGENT = "service:agent"
ENRICH = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 40}
set_tracing_disabled(True)


class StandInModel(Model):
    """Calls the paid tool, then answers with what the tool returned (approved or rejected)."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        given = args[1] if len(args) > 1 else kwargs["input"]
        for item in reversed(given if isinstance(given, list) else []):
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                text = ResponseOutputText(type="output_text", text=f"Done: {item['output']}",
                                          annotations=[])  # fmt: skip
                message = ResponseOutputMessage(id="m-1", type="message", role="assistant",
                                                status="completed", content=[text])  # fmt: skip
                return ModelResponse(output=[message], usage=Usage(), response_id=None)
        call = ResponseFunctionToolCall(type="function_call", id="fc-1", call_id="c-1",
                                        name="enrich_leads", arguments='{"rows": 40}')  # fmt: skip
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run without streaming")


def build_agent(client: ApprovalsClient, ran: list[int]) -> Agent[Any]:
    """A new agent each time, as a new process would build it; ``ran`` counts the side effect."""

    @function_tool(needs_approval=needs_approval(client, action=ENRICH, requested_by=AGENT,
                                                 skill_name="enrich-leads"))  # fmt: skip
    def enrich_leads(rows: int) -> str:
        """Enrich lead rows with a paid provider."""
        ran.append(rows)
        return f"enriched {rows} rows"

    return Agent(name="enricher", model=StandInModel(), tools=[enrich_leads])


async def ask(client: ApprovalsClient, execution: str, **request: Any) -> tuple[str, str]:
    """Run until the agent stops for approval and ask; the saved state and the approval id."""
    run = await Runner.run(build_agent(client, []), "Enrich this week's leads")
    asked = await ask_for(client, run.interruptions, requested_by=AGENT,
                          skill_name="enrich-leads", skill_execution_id=execution,
                          actions={"enrich_leads": ENRICH}, **request)  # fmt: skip
    assert list(asked) == ["c-1"]
    approval_id = asked["c-1"]
    assert approval_id is not None
    return run.to_state().to_string(), approval_id


async def resume(url: str, saved: str, approval_id: str, ran: list[int]) -> str:
    """Continue with new objects and a new connection: nothing but the saved state carries over."""
    async with await ApprovalsClient.connect(url, "default", reply_timeout=10.0) as client:
        agent = build_agent(client, ran)
        state = await RunState.from_string(agent, saved)
        state = await apply(client, state, {"c-1": approval_id}, executor=AGENT, wait_s=10)
        run = await Runner.run(agent, state)
    assert not run.interruptions
    return str(run.final_output)


async def test_approved_runs_the_tool_once_after_a_restart(stack: ApprovalsClient) -> None:
    saved, approval_id = await ask(stack, "approved")
    # Check: nobody decided yet: apply says so, redeems nothing, and the state stays paused.
    agent = build_agent(stack, [])
    state = await RunState.from_string(agent, saved)
    with pytest.raises(ApprovalPending) as pending:
        await apply(stack, state, {"c-1": approval_id}, executor=AGENT)
    assert pending.value.approval_id == approval_id
    # Check: asking again for the same call finds the same approval.
    _, again = await ask(stack, "approved")
    assert again == approval_id
    await decide(stack, approval_id, "approve")
    ran: list[int] = []
    assert await resume(url_of(stack), saved, approval_id, ran) == "Done: enriched 40 rows"
    assert ran == [40]

    async def redeemed() -> bool:  # the view follows the command service
        return (await stack.get(approval_id)).redeemed_at is not None

    await eventually(redeemed)
    # Check: the same saved state resumed again (a redelivery) does not run the tool again.
    output = await resume(url_of(stack), saved, approval_id, ran)
    assert "already used" in output
    assert ran == [40]


@pytest.mark.parametrize(("verb", "body", "told"), DENIALS)
async def test_a_rejection_tells_the_model_the_persons_message_and_runs_nothing(
    stack: ApprovalsClient, verb: str, body: dict[str, Any], told: str
) -> None:
    saved, approval_id = await ask(stack, verb)
    await shown(stack, approval_id)
    reply = await send(stack, verb, {"approval_id": approval_id, "approver": "user:ana", **body})
    assert reply["ok"], reply
    await decided_in_view(stack, approval_id)
    ran: list[int] = []
    assert await resume(url_of(stack), saved, approval_id, ran) == told
    assert ran == []


async def test_an_edited_approval_does_not_run_the_unedited_call(stack: ApprovalsClient) -> None:
    """The SDK runs a call with the model's arguments only: an edited approval rejects the call,
    telling the model the approved version, rather than running what was not approved."""
    saved, approval_id = await ask(stack, "edited")
    await decide(stack, approval_id, "approve", edits={"proposed_payload": {"rows": 10}})
    ran: list[int] = []
    output = await resume(url_of(stack), saved, approval_id, ran)
    assert output.startswith("Done: An approver changed this call")
    assert json.dumps({"rows": 10}) in output
    assert ran == []


async def test_an_expired_request_rejects_the_call(stack: ApprovalsClient) -> None:
    """Expiry as the scheduler does it: the ``expire`` command once the request is due."""
    saved, approval_id = await ask(stack, "expired", expires_in_s=1)
    await shown(stack, approval_id)

    async def expired() -> bool:
        reply = await send(stack, "expire", {"approval_id": approval_id, "by": "service:scheduler"})
        return bool(reply["ok"])

    await eventually(expired)
    await decided_in_view(stack, approval_id)
    ran: list[int] = []
    output = await resume(url_of(stack), saved, approval_id, ran)
    assert output.startswith("Done: Nobody decided before the approval request expired")
    assert ran == []


async def test_a_call_the_policy_allows_runs_without_asking(stack: ApprovalsClient) -> None:
    """``needs_approval`` asks the service: a dry-run action needs nobody, so no interruption."""
    ran: list[int] = []
    agent = build_agent(stack, ran)
    tool = agent.tools[0]
    tool.needs_approval = needs_approval(  # type: ignore[union-attr]
        stack, action={**ENRICH, "mode": "dry_run"}, requested_by=AGENT, skill_name="enrich-leads"
    )
    run = await Runner.run(agent, "Enrich this week's leads")
    assert not run.interruptions
    assert run.final_output == "Done: enriched 40 rows"
    assert ran == [40]


@pytest.mark.timeout(120)
async def test_the_docs_example_asks_in_one_process_and_resumes_in_another(
    stack: ApprovalsClient, tmp_path: Path
) -> None:
    env = {**os.environ, "NATS_URL": url_of(stack), "AGENT_STATE": str(tmp_path / "state.json")}
    asked = (await run_example("openai-agents", "ask", env)).split()
    assert asked[0] == "asked"
    assert (await run_example("openai-agents", "resume", env)).startswith("still pending:")
    await decide(stack, asked[1], "approve")
    assert (await run_example("openai-agents", "resume", env)).splitlines() == [
        "spending credits on 40 rows",
        "Done: enriched 40 rows",
    ]
    # Check: a third process reading the same decision does not spend again.
    again = (await run_example("openai-agents", "resume", env)).splitlines()
    assert len(again) == 1
    assert "already used" in again[0]
