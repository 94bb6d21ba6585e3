"""The HTTP API: ``/v1/workspaces/{workspace}/approvals``, the bus's commands and queries with the
same bodies and error codes, mapped to HTTP statuses. Callers authenticate with an API key of the
workspace (``approvals keys create``); every command acts as the key's member."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from approvals.schemas import subjects
from approvals.schemas.codec import reply_error
from approvals.schemas.commands import Request as RequestCommand
from approvals.schemas.commands import Via
from approvals.schemas.http import (
    HTTP_STATUS,
    ApproveBody,
    Body,
    CancelBody,
    DecisionsBody,
    DecisionsReply,
    RedeemBody,
    RejectBody,
    ReportBody,
    RespondBody,
)
from approvals.schemas.queries import CountReply, HistoryReply, ListReply, ViewReply, WaitReply
from approvals.schemas.replies import AnyReply
from approvals.schemas.types import RiskLevel, Status
from approvals.schemas.wording import WORDS
from approvals.services.gateway import decisions
from approvals.services.gateway.bus import Bus, GatewayError

if TYPE_CHECKING:
    from approvals.schemas.subjects import CommandVerb

WorkspacePath = FromPath[str]
ApprovalPath = FromPath[UUID]
JSON = "application/json"
AnyRequest = Request[Any, Any, Any]


def passthrough(data: bytes, success: int = 200) -> Response[Any]:
    """The service's reply as it came, with the HTTP status its outcome maps to."""
    error = reply_error(data)
    status, headers = success, {}
    if error is not None:
        status = HTTP_STATUS.get(error.code, 500)
        retry_after = error.details.get("retry_after_s")
        if status == 429 and isinstance(retry_after, int | float):
            headers["Retry-After"] = str(math.ceil(retry_after))  # RFC 9110: whole seconds
    return Response(content=data, status_code=status, media_type=JSON, headers=headers)


def bus_of(request: Request[Any, Any, Any]) -> Bus:
    return request.app.state.bus  # type: ignore[no-any-return]


async def caller(request: Request[Any, Any, Any], workspace: WorkspacePath) -> str:
    if not subjects.is_token(workspace):
        raise GatewayError("invalid", f"workspace {workspace!r} may hold "
                           f"{WORDS[subjects.TOKEN_PATTERN]}", workspace=workspace)  # fmt: skip
    return await bus_of(request).caller(workspace, request.headers.get("authorization"))


def key_via(request: Request[Any, Any, Any]) -> Via:
    """The door of a command sent with an API key (``caller`` checked the key first)."""
    token = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
    return Via(channel="api", auth="api_key", ref=token.removeprefix("apk_").partition(".")[0])


async def as_key_member(
    request: Request[Any, Any, Any], workspace: WorkspacePath, data: RequestCommand
) -> RequestCommand:
    """A request the API key's member makes, with the key as its door."""
    actor = await caller(request, workspace)
    if data.requested_by != actor:
        raise GatewayError(
            "forbidden", "requested_by must be the API key's member",
            rule="api_key_actor", requested_by=data.requested_by, key=actor,
        )  # fmt: skip
    return msgspec.structs.replace(data, via=key_via(request))


class ApprovalsApi(Controller):
    path = "/v1/workspaces/{workspace:str}/approvals"
    tags = ["approvals"]
    security = [{"apiKey": []}]

    @post("", status_code=201, summary="Ask for a decision before an action")
    async def create(
        self,
        request: Request[Any, Any, Any],
        workspace: WorkspacePath,
        data: JSONBody[RequestCommand],
    ) -> Response[AnyReply]:
        data = await as_key_member(request, workspace, data)
        reply = await bus_of(request).command(workspace, "request", data)
        created = b'"outcome":"not_required"' not in reply
        return passthrough(reply, 201 if created else 200)

    @post("/check", status_code=200, summary="Would this request need approval, and why?")
    async def check(
        self,
        request: Request[Any, Any, Any],
        workspace: WorkspacePath,
        data: JSONBody[RequestCommand],
    ) -> Response[AnyReply]:
        """The dry run of a request: the policy's answer; nothing is stored, no one is asked."""
        data = await as_key_member(request, workspace, data)
        return passthrough(await bus_of(request).command(workspace, "check", data))

    @get("", summary="List approvals, newest first (or oldest)")
    async def list_approvals(
        self,
        request: Request[Any, Any, Any],
        workspace: WorkspacePath,
        status: FromQuery[Status | None] = None,
        risk_level: FromQuery[RiskLevel | None] = None,
        skill_name: Annotated[str | None, Parameter(max_length=200)] = None,
        requested_by: Annotated[str | None, Parameter(max_length=200)] = None,
        created_after: FromQuery[datetime | None] = None,
        created_before: FromQuery[datetime | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
        order: Annotated[str, Parameter(pattern="^(newest|oldest)$")] = "newest",
    ) -> Response[ListReply]:
        await caller(request, workspace)
        query = {"status": status, "risk_level": risk_level, "skill_name": skill_name,
                 "requested_by": requested_by, "created_after": created_after,
                 "created_before": created_before, "limit": limit, "cursor": cursor,
                 "order": order}  # fmt: skip
        body = {k: v for k, v in query.items() if v is not None}
        return passthrough(await bus_of(request).query(workspace, "list", body))

    @post("/decisions", status_code=200, summary="Approve or reject several, each on its own")
    async def decide_many(
        self, request: AnyRequest, workspace: WorkspacePath, data: JSONBody[DecisionsBody]
    ) -> Response[DecisionsReply]:
        """Each item is its own approve or reject command, as the key's member, bound to the
        item's digest; ``results`` answers each in order (an item of another workspace is
        ``not_found``). At most 100 items (``too_large``); nothing is decided when the call is
        refused as a whole."""
        actor = await caller(request, workspace)
        decisions.check_items(data.items, data.decision)
        via = key_via(request)
        bodies = [decisions.command_body(item, data.decision, actor, via, data.reason, data.rerun,
                                         data.for_member) for item in data.items]  # fmt: skip
        results = await decisions.decide_each(bus_of(request), workspace, data.decision, bodies)
        return passthrough(msgspec.json.encode(DecisionsReply(results=results)))

    @get("/counts", summary="How many approvals there are, by status")
    async def counts(
        self,
        request: Request[Any, Any, Any],
        workspace: WorkspacePath,
        status: FromQuery[Status | None] = None,
    ) -> Response[CountReply]:
        await caller(request, workspace)
        body = {"status": status} if status else {}
        return passthrough(await bus_of(request).query(workspace, "count", body))

    @get("/{approval_id:uuid}", summary="One approval")
    async def get_approval(
        self, request: Request[Any, Any, Any], workspace: WorkspacePath, approval_id: ApprovalPath
    ) -> Response[ViewReply]:
        await caller(request, workspace)
        body = {"approval_id": approval_id}
        return passthrough(await bus_of(request).query(workspace, "get", body))

    @get("/{approval_id:uuid}/history", summary="Every event of one approval, in order")
    async def history(
        self, request: Request[Any, Any, Any], workspace: WorkspacePath, approval_id: ApprovalPath
    ) -> Response[HistoryReply]:
        await caller(request, workspace)
        body = {"approval_id": approval_id}
        return passthrough(await bus_of(request).query(workspace, "history", body))

    @get("/{approval_id:uuid}/wait", summary="Wait (long poll) until the approval is decided")
    async def wait(
        self,
        request: Request[Any, Any, Any],
        workspace: WorkspacePath,
        approval_id: ApprovalPath,
        timeout_s: Annotated[float, Parameter(gt=0, le=300)] = 30.0,
    ) -> Response[WaitReply]:
        await caller(request, workspace)
        body = {"approval_id": approval_id, "timeout_s": timeout_s}
        bus = bus_of(request)
        return passthrough(await bus.long_poll(workspace, "wait", body, timeout_s + bus.timeout_s))

    @post("/{approval_id:uuid}/approve", status_code=200, summary="Approve, as the key's member")
    async def approve(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[ApproveBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "approve", data, "approver")

    @post("/{approval_id:uuid}/reject", status_code=200, summary="Reject, as the key's member")
    async def reject(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[RejectBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "reject", data, "approver")

    @post(
        "/{approval_id:uuid}/respond",
        status_code=200,
        summary="Answer with a message instead of deciding, as the key's member",
    )
    async def respond(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[RespondBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "respond", data, "approver")

    @post("/{approval_id:uuid}/cancel", status_code=200, summary="Withdraw a pending request")
    async def cancel(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[CancelBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "cancel", data, "by")

    @post("/{approval_id:uuid}/redeem", status_code=200, summary="Start the approved action, once")
    async def redeem(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[RedeemBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "redeem", data, "executor")

    @post("/{approval_id:uuid}/report", status_code=200, summary="What the run did")
    async def report(
        self, request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath,
        data: JSONBody[ReportBody],
    ) -> Response[AnyReply]:  # fmt: skip
        return await act(request, workspace, approval_id, "report", data, "by")


async def act(
    request: AnyRequest,
    workspace: WorkspacePath,
    approval_id: ApprovalPath,
    verb: CommandVerb,
    data: Body,
    actor_field: str,
) -> Response[Any]:
    """A command on one approval, as the API key's member (named in ``actor_field``)."""
    actor = await caller(request, workspace)
    body = {**msgspec.structs.asdict(data), "approval_id": approval_id, actor_field: actor,
            "via": key_via(request)}  # fmt: skip
    return passthrough(await bus_of(request).command(workspace, verb, body))
