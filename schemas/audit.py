"""What the audit tools publish and print: checkpoints, histories, replays, verifications, reports.

Checkpoints travel on ``approvals.audit.checkpoints`` (JetStream stream ``APPROVALS_CHECKPOINTS``);
the rest is what ``approvals audit ... --json`` prints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from approvals.schemas.commands import Via


class CheckpointBody(msgspec.Struct, frozen=True, kw_only=True):
    """The log up to ``position``: ``events`` events whose log hash (schemas/chain.py) is
    ``log_hash``. The signature covers this body's compact JSON, fields in this order."""

    checkpoint_version: Literal[1] = 1
    key_id: str  # the command service's signing key (approvals.query.keys)
    position: int  # the last notification id covered
    events: int  # how many events the log holds up to ``position``
    log_hash: str
    at: datetime  # when it was signed


class Checkpoint(CheckpointBody, frozen=True, kw_only=True):
    algorithm: Literal["Ed25519"] = "Ed25519"
    signature: str  # base64url

    def body(self) -> CheckpointBody:
        fields = msgspec.structs.asdict(self)
        del fields["algorithm"], fields["signature"]
        return CheckpointBody(**fields)


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of an approval's story, with where it sits in the log."""

    position: int
    aggregate: Literal["approval", "budget", "allowance"]
    version: int
    type: str
    occurred_at: datetime
    actor: str
    via: Via | None  # the door (channel) and how the sender was authenticated
    digest: str | None  # the action digest the event names, if it names one
    detail: str  # what a person needs at a glance: the reason, the channel, the credits
    schema_version: int
    hash: str
    event: dict[str, Any]  # the whole event as stored


class History(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    approval_id: UUID
    workspace_id: str
    entries: list[HistoryEntry]


class ApprovalState(msgspec.Struct, frozen=True, kw_only=True):
    """An approval as the events up to a point make it."""

    id: UUID
    workspace_id: str
    status: str
    version: int
    title: str
    requested_by: str
    digest: str
    quorum: int
    votes: tuple[str, ...]
    decided_by: str | None
    max_credits: float | None
    redeemed_at: datetime | None
    credits_used: float | None
    modified_at: datetime


class BudgetState(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    period: str
    cap: float
    committed: float
    held: int  # approvals whose ceiling is reserved and not yet settled or released


class WorkspaceState(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    approvals: dict[str, int]  # by status
    budgets: list[BudgetState]


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    approval_id: UUID
    workspace_id: str
    field: str  # "missing" when the read model lacks it, "extra" when only the read model has it
    replayed: Any
    read_model: Any


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    compared: int
    matching: int
    differences: list[Difference]


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    source: Literal["store", "stream", "export"]
    position: int  # the last position read
    events: int  # events applied (those of the workspace or approval asked for)
    up_to_position: int | None
    at: datetime | None
    workspaces: list[WorkspaceState]
    approvals: list[ApprovalState]  # one approval's, or every one with --details
    comparison: Comparison | None = None


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Where the log stops matching its chain or its signed checkpoints."""

    code: Literal[
        "hash_mismatch", "missing_event", "version_mismatch",
        "checkpoint_mismatch", "log_truncated", "checkpoint_invalid", "unreadable",
        "passkey_invalid",
    ]  # fmt: skip
    position: int
    aggregate_id: UUID | None = None
    version: int | None = None
    type: str | None = None
    message: str
    reason: str | None = None  # passkey_invalid: why (see docs/passkeys.md)


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    source: Literal["store", "export"]
    events: int
    aggregates: int
    position: int  # the last event read
    log_hash: str
    unsealed: int  # version 1 events, stored before the chain: linked, with no hash to check
    checkpoints: int  # signed checkpoints checked against the log
    last_checkpoint: int | None  # the position of the last one that matched
    first_problem: Problem | None
    problems: int
    passkeys: int = 0  # passkey-signed votes and decisions checked


class ReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One workspace in one period."""

    workspace_id: str
    period: str
    requests: int
    approved: int
    rejected: int
    expired: int
    cancelled: int
    pending: int
    median_decision_s: float | None  # from request to a person's approval, rejection or answer
    credits_approved: float  # the ceilings of what was approved
    credits_used: float  # what the reported runs used
    top_requesters: list[tuple[str, int]]
    responded: int = 0  # answered with a message instead of decided (never run)


class Report(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    period: Literal["day", "week", "month"]
    since: datetime | None
    until: datetime | None
    rows: list[ReportRow]
