"""Queries on ``approvals.query.<workspace>.<verb>``, answered by the status projection."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from approvals.schemas.commands import Action
from approvals.schemas.events import FieldChange, SpendPicture
from approvals.schemas.receipts import Receipt
from approvals.schemas.types import RiskLevel, Status

QUERY_QUEUE = "approvals-queries"
QueryVerb = Literal["get", "list", "count", "history", "wait"]
QUERY_VERBS: tuple[QueryVerb, ...] = ("get", "list", "count", "history", "wait")

Timeout = Annotated[float, msgspec.Meta(gt=0, le=300)]


class Query(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every query body."""


class Get(Query, frozen=True, kw_only=True):
    approval_id: UUID
    min_version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 2.0


class List(Query, frozen=True, kw_only=True):
    status: Status | None = None
    risk_level: RiskLevel | None = None
    skill_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    requested_by: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    order: Literal["newest", "oldest"] = "newest"  # by created_at (the review queue: oldest)


class Count(Query, frozen=True, kw_only=True):
    status: Status | None = None


class History(Query, frozen=True, kw_only=True):
    approval_id: UUID


class Wait(Query, frozen=True, kw_only=True):
    approval_id: UUID
    timeout_s: Timeout = 30.0


QUERIES: dict[str, type[Query]] = {
    "get": Get,
    "list": List,
    "count": Count,
    "history": History,
    "wait": Wait,
}


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    """One approval as the status projection shows it."""

    id: UUID
    workspace_id: str
    status: Status
    title: str
    summary: str
    risk_level: RiskLevel
    requested_by: str
    on_behalf_of: str | None
    skill_name: str
    skill_execution_id: str
    action_kind: str
    mode: str
    provider: str | None
    destination: str | None
    max_credits: float | None
    digest: str
    channels: tuple[str, ...]
    decided_by: str | None
    reason: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    version: int
    quorum: int = 1  # approvals needed
    votes: tuple[str, ...] = ()  # the members who approved so far ("1 of 2")
    redeemed_at: datetime | None = None  # when the executor started the approved action
    credits_used: float | None = None  # what the reported run used, against max_credits
    redeem_by: datetime | None = None  # approved: the action must start before this
    spend: SpendPicture | None = None  # the budget picture when the request came in
    receipt: Receipt | None = None  # approved: the signed receipt
    reminders: int = 0  # how many times the approvers were reminded
    escalated_to: str | None = None  # the group it was escalated to
    rerun: bool = False  # rejected: the person asks the caller to prepare a new request
    web_url: str = ""
    # Approve with edits. The request's own action, payload and payload_schema; then the version
    # approved: its digest, action and payload (the request's own unless an approver edited
    # them: what the executor must run and redeem) and ``changes`` from the request. While
    # pending, set only once an approver proposed an edit under a quorum: the version voted on.
    action: Action | None = None
    proposed_payload: Any = None
    payload_schema: dict[str, Any] | None = None
    approved_digest: str | None = None
    approved_action: Action | None = None
    approved_payload: Any = None
    changes: tuple[FieldChange, ...] = ()


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    type: str
    actor: str
    occurred_at: datetime
    notification_id: int
    event: dict[str, Any]


class ViewReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    approval: ApprovalView
    caught_up: bool = True


class ListReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    items: list[ApprovalView]
    next_cursor: str | None


class CountReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    counts: dict[str, int]
    total: int


class HistoryReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    approval_id: UUID
    timeline: list[TimelineEntry]


class WaitReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    approval: ApprovalView
    timed_out: bool
