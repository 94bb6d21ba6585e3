"""``approvals mcp``: the approval gate as Model Context Protocol tools, for AI agents.

An agent asks before it acts (``request_approval``), waits a bounded time or comes back later
with the approval id (``get_approval``, ``wait_for_approval``), starts exactly what was approved
once (``redeem_approval``) and says what the run did (``report_run``). Every request is made as
the one actor this server is configured with. No tool approves, rejects or cancels: a person
decides, in the inbox, Slack, Discord, email or the API, never the agent through this door.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run time.
import asyncio
import contextlib
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Required

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from typing_extensions import TypedDict

from approvals.schemas.commands import Action
from approvals.schemas.digest import action_digest
from approvals.schemas.types import ActionKind, Mode, RiskLevel, Status
from approvals.schemas.wording import in_words

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from approvals.services.agent.doors import Door

INSTRUCTIONS = """\
Approvals puts a person's decision in front of actions that spend money or write to the outside
world. Before you run any of these, call request_approval and act only on what it says:

- a paid provider call (action.kind "provider_call"), a column run that uses credits
  ("column_run"), a CRM write ("crm_write"), an outbound enrollment ("outbound_enrollment"),
  a LinkedIn action ("linkedin_action"), a campaign sync ("campaign_sync"), publishing
  ("publish"), anything else that writes ("other"), and a live workflow fire ("workflow_fire")
  whose steps do any of these (or whose steps you do not know): approval REQUIRED in mode "live";
- anything in mode "dry_run" or "smoke_test", and reads ("read", or a workflow fire that only
  reads): no approval needed.

A live action that consumes credits needs action.max_credits (the ceiling a person approves).
If the answer is "approval_required", you MUST NOT proceed: tell the user the web_url, then call
wait_for_approval (bounded) or come back later with get_approval and the approval_id. Proceed
only once the status is "approved", and call redeem_approval with exactly the action and payload
that were approved right before you start (approved_action and approved_payload: a person may
have approved a narrower version than you asked for; run that one); then report_run.
"rejected", "expired" or "cancelled" mean: do not run it. A rejection says why (reason); with
rerun true the person asks you to prepare the action again, taking the reason into account, and
request approval anew. "responded" means a person answered instead of deciding (message: you
asked the wrong question, or they need something first): do not run it; act on the message,
then ask again if it applies.
No tool here approves: a person decides.
"""

MAX_WAIT_S = 300.0


class ActionArg(TypedDict, total=False):
    """The action you want to take."""

    kind: Required[ActionKind]
    mode: Required[Mode]
    provider: str  # the paid provider, e.g. "clearbit"
    destination: str  # where it writes, e.g. "hubspot"
    scope: dict[str, Any]  # table, column, workflow, filters, row_ids, row_count
    max_credits: float  # the most it may spend: required for a live credit-consuming action
    expected_credits: float
    preview: Any  # what the person sees: sample rows, the message to be sent
    touches: list[ActionKind]  # workflow_fire: the kinds of action its steps take


Text = Annotated[str, Field(min_length=1, max_length=200)]
ApprovalId = Annotated[str, Field(description="The approval_id request_approval returned.")]


class Agent(NamedTuple):
    server: MCPServer[Any]
    close: "Callable[[], Awaitable[None]]"  # closes the door once the server has stopped


def build(door_factory: "Callable[[], Awaitable[Door]]", actor: str) -> Agent:
    """The MCP server; ``door_factory`` connects on first use (in the server's event loop)."""
    server: MCPServer[Any] = MCPServer(
        "approvals", instructions=INSTRUCTIONS, version="1",
        description="Ask a person before spending money or writing to the outside world.",
    )  # fmt: skip
    opened: list[Door] = []
    lock = asyncio.Lock()

    async def door() -> "Door":
        async with lock:
            if not opened:
                opened.append(await door_factory())
            return opened[0]

    def request_body(
        skill_name: str, skill_execution_id: str, title: str, summary: str,
        risk_level: RiskLevel, action: ActionArg, proposed_payload: Any,
        idempotency_key: str | None, expires_in_s: int | None, trace_id: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        body = {
            "requested_by": actor, "skill_name": skill_name,
            "skill_execution_id": skill_execution_id, "title": title, "summary": summary,
            "risk_level": risk_level, "action": _action(action),
            "proposed_payload": proposed_payload, "idempotency_key": idempotency_key,
            "expires_in_s": expires_in_s, "trace_id": trace_id,
        }  # fmt: skip
        return {k: v for k, v in body.items() if v is not None}

    @server.tool()
    async def check_approval_needed(
        skill_name: Text, skill_execution_id: Text, title: Text, summary: str,
        risk_level: RiskLevel, action: ActionArg, proposed_payload: Any = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Would this action need a person's approval, and why? Stores nothing, asks no one.
        outcome "not_required"; "approved_at_once" (a standing permission, named in
        policy.standing_rule, would approve the request at once); "approval_required"; a ceiling
        that can never be approved is refused with spend_cap_exceeded and the numbers. Use
        request_approval to actually ask (it answers the same way)."""
        body = request_body(skill_name, skill_execution_id, title, summary, risk_level, action,
                            proposed_payload, None, None, None)  # fmt: skip
        reply = _ok(await (await door()).command("check", body))
        required = reply.get("outcome") == "approval_required"
        return {"approval_required": required, "outcome": reply.get("outcome"),
                "policy": reply.get("policy")}  # fmt: skip

    @server.tool()
    async def request_approval(
        skill_name: Text, skill_execution_id: Text, title: Text, summary: str,
        risk_level: RiskLevel, action: ActionArg, proposed_payload: Any = None,
        idempotency_key: Annotated[str | None, Field(
            description="Same key, same approval: ask again after a restart without a "
                        "second request.", max_length=200)] = None,
        expires_in_s: Annotated[int | None, Field(ge=60, le=30 * 86400)] = None,
        trace_id: Annotated[str | None, Field(max_length=200)] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Ask a person before a high-impact action (see the server's instructions for which).
        outcome "approval_required": you MUST NOT proceed; show web_url to the user and call
        wait_for_approval or get_approval with approval_id later. "not_required" (nothing was
        stored) or "approved" (a standing permission covered it): you may proceed. The action's
        preview is what the person sees; max_credits is the ceiling they approve."""
        body = request_body(skill_name, skill_execution_id, title, summary, risk_level, action,
                            proposed_payload, idempotency_key, expires_in_s, trace_id)  # fmt: skip
        reply = _ok(await (await door()).command("request", body))
        outcome = reply.get("outcome")
        answer: dict[str, Any] = {
            "outcome": outcome, "may_proceed": outcome in ("not_required", "approved"),
            "policy": reply.get("policy"),
        }  # fmt: skip
        approval = reply.get("approval")
        if approval:
            answer |= _summary(approval)
        if outcome == "approval_required":
            answer["next"] = ("Do not proceed. Show web_url to the user, then call "
                              "wait_for_approval with approval_id.")  # fmt: skip
        return answer

    @server.tool()
    async def get_approval(approval_id: ApprovalId) -> dict[str, Any]:
        """The approval as it stands now: status pending, approved, rejected, expired,
        cancelled or responded, who decided and why (reason), the web_url; approved:
        approved_action and approved_payload, what to run (a person may have edited them: see
        changes). rerun true: the person rejected it asking for a new request (prepare it again
        with the reason in mind). responded: the person answered with a message instead of
        deciding; do not run it."""
        return _summary(_ok(await (await door()).get(approval_id))["approval"])

    @server.tool()
    async def wait_for_approval(
        approval_id: ApprovalId,
        timeout_s: Annotated[float, Field(gt=0, le=MAX_WAIT_S)] = 60.0,
    ) -> dict[str, Any]:
        """Wait up to timeout_s seconds for a person's decision, then return the approval as it
        stands. Still "pending" (timed_out true): nothing is lost; call again, or come back
        later with the same approval_id. Proceed only on status "approved"; "rejected" with
        rerun true asks for a new request (see reason); "responded" is a person's answer
        (message) instead of a decision: do not run it."""
        reply = _ok(await (await door()).wait(approval_id, timeout_s))
        return {**_summary(reply["approval"]), "timed_out": reply.get("timed_out", False)}

    @server.tool()
    async def redeem_approval(
        approval_id: ApprovalId, action: ActionArg, proposed_payload: Any = None
    ) -> dict[str, Any]:
        """Right before you start the approved action: proves that what you are about to run is
        exactly what was approved (the same action and payload) and marks it started, once.
        Refused if anything differs, if it was redeemed already, or after its deadline."""
        converted = msgspec.convert(_action(action), Action)
        body = {"approval_id": approval_id, "digest": action_digest(converted, proposed_payload),
                "executor": actor, "action": msgspec.to_builtins(converted),
                "proposed_payload": proposed_payload}  # fmt: skip
        reply = _ok(await (await door()).command("redeem", body))
        return {"outcome": reply.get("outcome"), **_summary(reply.get("approval") or {})}

    @server.tool()
    async def report_run(
        approval_id: ApprovalId,
        credits_used: Annotated[float, Field(ge=0)],
        outcome: Literal["succeeded", "failed", "partial"],
        summary: Annotated[str, Field(max_length=4000)] = "",
        external_refs: list[str] | None = None,
    ) -> dict[str, Any]:
        """After the run: what it did and what it spent (over the approved ceiling is recorded
        and flagged to the workspace)."""
        body = {"approval_id": approval_id, "credits_used": credits_used, "outcome": outcome,
                "by": actor, "summary": summary, "external_refs": external_refs or []}  # fmt: skip
        reply = _ok(await (await door()).command("report", body))
        return {"outcome": reply.get("outcome"), **_summary(reply.get("approval") or {})}

    @server.tool()
    async def list_my_requests(
        status: Status | None = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """The approvals this agent asked for, newest first (optionally of one status)."""
        query: dict[str, Any] = {"requested_by": actor, "limit": limit}
        if status is not None:
            query["status"] = status
        reply = _ok(await (await door()).list(query))
        return {"approvals": [_summary(a) for a in reply.get("items", [])]}

    async def close() -> None:
        for opened_door in opened:
            with contextlib.suppress(Exception):
                await opened_door.close()

    return Agent(server, close)


def _action(action: ActionArg) -> dict[str, Any]:
    """The action as the service takes it, or a clear error."""
    try:
        return msgspec.to_builtins(msgspec.convert(dict(action), Action), order="sorted")  # type: ignore[no-any-return]
    except msgspec.ValidationError as error:
        raise ToolError(f"invalid: action: {in_words(str(error))}") from None


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply, or a tool error naming the service's stable code."""
    if reply.get("ok") is False or "error" in reply:
        error = reply.get("error") or {}
        details = error.get("details") or {}
        extra = f" {msgspec.json.encode(details).decode()}" if details else ""
        raise ToolError(f"{error.get('code', 'internal')}: {error.get('message', '')}{extra}")
    return reply


SUMMARY = ("id", "status", "web_url", "title", "risk_level", "requested_by", "skill_name",
           "skill_execution_id", "digest", "decided_by", "reason", "expires_at", "redeem_by",
           "redeemed_at", "credits_used", "max_credits", "votes", "quorum", "rerun",
           "approved_digest", "approved_action", "approved_payload", "changes")  # fmt: skip


def _summary(approval: dict[str, Any]) -> dict[str, Any]:
    """What an agent needs of an approval; ``approval_id`` is what it resumes with."""
    picked = {k: approval[k] for k in SUMMARY if approval.get(k) not in (None, "", [], ())}
    if "id" in picked:
        picked["approval_id"] = picked.pop("id")
    if picked.get("status") == "responded":  # the answer is the reason; named for what it is
        picked["message"] = picked.get("reason", "")
        picked["next"] = ("Do not run it: a person answered instead of deciding. Act on the "
                          "message, then request approval again if it still applies.")  # fmt: skip
    if isinstance(picked.get("approved_action"), dict):  # as redeem_approval takes it back
        picked["approved_action"] = {
            k: v for k, v in picked["approved_action"].items() if v is not None
        }
    return picked
