"""Bodies of the HTTP API (``/v1``): the commands without the fields the gateway fills in (the
approval id comes from the path, the actor from the API key)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from approvals.schemas.commands import Action, Edits
from approvals.schemas.replies import ErrorBody
from approvals.schemas.types import Credits, Digest, LongText, Person, ShortText, Status

HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "already_decided": 409,
    "digest_mismatch": 409,
    "spend_cap_exceeded": 409,
    "not_approved": 409,
    "already_redeemed": 409,
    "expired": 410,
    "too_large": 413,
    "credit_ceiling_required": 422,
    "internal": 500,
    "unavailable": 503,
    "rate_limited": 429,
    "passkey_required": 403,  # details.web_url: where the browser can sign it
    "passkey_invalid": 403,
}


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ApproveBody(Body, frozen=True, kw_only=True):
    digest: Digest  # the digest of what the approver was shown
    reason: LongText | None = None
    for_member: Person | None = None
    edits: Edits | None = None  # approve a narrower version (see the approve command)


class RejectBody(Body, frozen=True, kw_only=True):
    reason: LongText | None = None
    rerun: bool = False  # ask the requesting skill to regenerate
    for_member: Person | None = None


class RespondBody(Body, frozen=True, kw_only=True):
    """An answer instead of a decision: the request ends ``responded`` with ``message``."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    for_member: Person | None = None


class CancelBody(Body, frozen=True, kw_only=True):
    reason: LongText | None = None


class RedeemBody(Body, frozen=True, kw_only=True):
    digest: Digest  # the digest of the action about to run
    # Optional: the action and payload about to run, so a mismatch says which of them differs.
    action: Action | None = None
    proposed_payload: Any = None


class ReportBody(Body, frozen=True, kw_only=True):
    credits_used: Credits
    outcome: Literal["succeeded", "failed", "partial"]
    summary: LongText = ""
    external_refs: Annotated[tuple[ShortText, ...], msgspec.Meta(max_length=100)] = ()


# -- deciding many at once ---------------------------------------------------------------------

MAX_DECISIONS = 100  # items in one call: above it the call is refused as too_large, nothing decided


class DecisionItem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    approval_id: UUID
    # The digest the approver was shown: required to approve (the command binds to it); a
    # rejection runs nothing, so it may leave it out.
    digest: Digest | None = None


class DecisionsBody(Body, frozen=True, kw_only=True):
    """Approve or reject several approvals: each item is its own command, decided or refused on
    its own (quorum, separation of duties, budget apply per item)."""

    decision: Literal["approve", "reject"]
    items: Annotated[list[DecisionItem], msgspec.Meta(min_length=1)]
    reason: LongText | None = None
    rerun: bool = False  # reject: ask the requesting skill to regenerate
    for_member: Person | None = None


class ItemResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's answer: ``outcome`` (approved, vote_cast, rejected) or ``error``."""

    approval_id: UUID
    ok: bool
    outcome: str | None = None
    status: Status | None = None  # the approval's status after the command, where it was decided
    error: ErrorBody | None = None


class DecisionsReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    results: list[ItemResult]
