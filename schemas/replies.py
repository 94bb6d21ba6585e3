"""Replies and the error shape.

Every reply is ``{"ok": true, ...}`` or ``{"ok": false, "error": {...}}``: the ``Envelope``.
Whether a reply succeeded is read with ``schemas.codec.reply_error``, the one place that decodes
the envelope; the typed reply (``Reply``, ``ViewReply``, ...) is decoded after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from approvals.schemas.commands import Action
from approvals.schemas.events import FieldChange
from approvals.schemas.receipts import Receipt
from approvals.schemas.types import RiskLevel, Status
from approvals.schemas.workspace import Change, WorkspaceSettings

ErrorCode = Literal[
    "invalid",
    "not_found",
    "conflict",
    "forbidden",
    "expired",
    "already_decided",
    "digest_mismatch",
    "too_large",
    "credit_ceiling_required",
    "spend_cap_exceeded",
    "not_approved",
    "already_redeemed",
    "unavailable",
    "unauthorized",
    "internal",
    "rate_limited",
    "passkey_required",
    "passkey_invalid",
]

Outcome = Literal[
    "approval_required",
    "not_required",
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "delivered",
    "delivery_failed",
    "reminded",
    "escalated",
    "vote_cast",
    "configured",
    "delegated",
    "redeemed",
    "run_reported",
    "spend_checked",
    "released",
    "api_key_created",
    "api_key_revoked",
    "passkey_registered",
    "passkey_removed",
    "grant_revoked",
    "responded",  # a person answered with a message instead of deciding
    "approved_at_once",  # check: a standing permission (policy.standing_rule) would approve it
]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    target: str
    external_ref: str | None = None


class ApprovalState(msgspec.Struct, frozen=True, kw_only=True):
    """An approval as a reply shows it."""

    id: UUID
    workspace_id: str
    status: Status
    version: int
    digest: str
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    web_url: str
    title: str
    summary: str
    risk_level: RiskLevel
    requested_by: str
    on_behalf_of: str | None
    skill_name: str
    skill_execution_id: str
    action: Action
    proposed_payload: Any
    trace_id: str | None
    deliveries: tuple[Delivery, ...]
    decided_by: str | None
    reason: str | None
    quorum: int = 1
    votes: tuple[str, ...] = ()  # the members who approved so far
    redeem_by: datetime | None = None  # approved: the action must start before this
    receipt: Receipt | None = None  # approved: the signed receipt
    rerun: bool = False  # rejected: the person asks the caller to prepare a new request
    # Approve with edits: the version approved (the request's own unless an approver edited it;
    # pending: set only once an edit was proposed under a quorum), and how it differs.
    payload_schema: dict[str, Any] | None = None
    approved_digest: str | None = None
    approved_action: Action | None = None
    approved_payload: Any = None
    changes: tuple[FieldChange, ...] = ()


class PolicyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Why a request needs approval or not: the row of the table, and any standing rule."""

    required: bool
    row: str
    reason: str
    standing_rule: str | None = None
    quorum: int | None = None


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    outcome: Outcome
    approval: ApprovalState | None = None
    replayed: bool = False
    policy: PolicyInfo | None = None
    settings_version: int | None = None  # configure, delegate: the workspace's settings version
    changes: tuple[Change, ...] | None = None  # configure: what changed


class DelegationState(msgspec.Struct, frozen=True, kw_only=True):
    delegator: str
    delegate: str
    ends_at: datetime


class WorkspaceState(msgspec.Struct, frozen=True, kw_only=True):
    """The settings in force, as ``approvals.query.<workspace>.workspace`` answers."""

    workspace_id: str
    version: int
    settings: WorkspaceSettings
    configured_by: str
    configured_at: datetime
    delegations: tuple[DelegationState, ...] = ()  # those not yet ended


class WorkspaceReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    workspace: WorkspaceState


class BudgetState(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace's budget in the current period, as ``approvals.query.<ws>.budget`` answers."""

    workspace_id: str
    period: str
    cap: float
    max_per_run: float | None
    committed: float
    remaining: float
    held: int  # approvals whose ceiling is reserved and not yet settled


class BudgetReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    budget: BudgetState


class ApiKeyState(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    actor: str
    name: str
    secret_sha256: str
    revoked: bool
    created_by: str
    created_at: datetime


class ApiKeyReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    key: ApiKeyState


class GrantState(msgspec.Struct, frozen=True, kw_only=True):
    """A grant as ``approvals.query.<ws>.grants`` lists it: its id (the approval it was given
    with), what it covers, its bounds, its use and whether it still covers anything."""

    grant_id: UUID
    status: Literal["active", "expired", "revoked"]
    granted_by: str
    granted_at: datetime
    ends_at: datetime  # its expiry, or sooner if the workspace's maximum was lowered since
    requested_by: str
    kind: str
    provider: str | None
    destination: str | None
    risk_level: str
    max_credits: float | None
    runs: int | None  # the most it covers per day (UTC); None: no count
    runs_today: int
    runs_total: int
    revoked_by: str | None = None
    revoked_at: datetime | None = None


class GrantsReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    grants: tuple[GrantState, ...]


class MembershipsReply(msgspec.Struct, frozen=True, kw_only=True):
    """The workspaces whose settings name ``member`` (by id or alias), with the member id there."""

    ok: Literal[True] = True
    workspaces: dict[str, str]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: ErrorCode
    message: str
    details: dict[str, Any] = {}


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What every reply has: whether it succeeded and, if not, why. The rest of the reply is
    skipped unparsed."""

    ok: bool
    error: ErrorBody | None = None


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[False] = False
    error: ErrorBody
    approval: ApprovalState | None = None


class AnyReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a client decodes any reply into: ``ok`` tells which fields are set."""

    ok: bool
    outcome: Outcome | None = None
    approval: ApprovalState | None = None
    replayed: bool = False
    policy: PolicyInfo | None = None
    settings_version: int | None = None
    changes: tuple[Change, ...] | None = None
    error: ErrorBody | None = None
