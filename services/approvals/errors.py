"""Domain errors: one small hierarchy, each with the stable code a reply carries."""

from __future__ import annotations

from typing import Any, ClassVar


class ApprovalError(Exception):
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(ApprovalError):
    code = "invalid"


class TooLarge(ApprovalError):
    code = "too_large"


class NotFound(ApprovalError):
    code = "not_found"


class Conflict(ApprovalError):
    code = "conflict"


class Unavailable(ApprovalError):
    """The store failed on this command: nothing of it was stored, and it may be sent again."""

    code = "unavailable"


class Forbidden(ApprovalError):
    code = "forbidden"


class DeadlinePassed(ApprovalError):
    code = "expired"


class AlreadyDecided(ApprovalError):
    code = "already_decided"


class DigestMismatch(ApprovalError):
    code = "digest_mismatch"


class CreditCeilingRequired(ApprovalError):
    code = "credit_ceiling_required"


class SpendCapExceeded(ApprovalError):
    code = "spend_cap_exceeded"


class NotApproved(ApprovalError):
    code = "not_approved"


class AlreadyRedeemed(ApprovalError):
    code = "already_redeemed"


class RateLimited(ApprovalError):
    """Over one of the workspace's limits on prompts; ``details.retry_after_s`` says when to
    try again."""

    code = "rate_limited"


class PasskeyRequired(ApprovalError):
    """The workspace requires a passkey for this decision and none came with it (or the door
    cannot run the ceremony): ``details.web_url`` is where to finish it in the browser."""

    code = "passkey_required"


class PasskeyInvalid(ApprovalError):
    """The passkey assertion does not sign this decision by this member with a registered
    credential: ``details.reason`` names why (see docs/passkeys.md)."""

    code = "passkey_invalid"
