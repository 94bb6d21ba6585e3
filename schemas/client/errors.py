"""What the client raises: a refusal with the service's stable code, or a gate that may not
run (nobody decided yet, or the answer was no)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from approvals.schemas.codec import NO_REASON

if TYPE_CHECKING:
    from approvals.schemas.queries import ApprovalView
    from approvals.schemas.replies import ErrorBody


class ApprovalsError(Exception):
    """A refusal, with the stable code, message and details of the service's error shape."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def of(cls, error: ErrorBody | None) -> ApprovalsError:
        """The error of a refused reply (one without an error body is still a refusal)."""
        error = error or NO_REASON
        return cls(error.code, error.message, error.details)


class ApprovalPending(Exception):
    """Nobody has decided yet: come back later with ``approval_id`` (or the same request)."""

    def __init__(self, approval_id: str, web_url: str) -> None:
        super().__init__(f"approval {approval_id} is still pending: {web_url}")
        self.approval_id = approval_id
        self.web_url = web_url


class ApprovalDenied(Exception):
    """The approval was rejected, expired or cancelled: the action must not run.

    ``reason`` is why, as the person gave it; ``rerun`` is true when they rejected it asking
    for a new request (prepare the action again, then ask again)."""

    def __init__(self, approval: ApprovalView) -> None:
        why = f" ({approval.reason})" if approval.reason else ""
        again = "; a new request is asked for" if approval.rerun else ""
        super().__init__(f"approval {approval.id} was {approval.status}{why}{again}")
        self.approval = approval
        self.reason = approval.reason
        self.rerun = approval.rerun


class ApprovalResponded(ApprovalDenied):
    """A person answered the request with ``message`` instead of deciding it (the question was
    not the right one, or they need more first): the action must not run. An ApprovalDenied, so
    code that catches denials catches this too; read the message, then ask again if it applies."""

    def __init__(self, approval: ApprovalView) -> None:
        super().__init__(approval)
        self.message = approval.reason or ""
        self.args = (f"approval {approval.id} was answered instead of decided: {self.message}",)


def denial(approval: ApprovalView) -> ApprovalDenied:
    """The error for an approval that ended without approval: an answer is its own kind."""
    if approval.status == "responded":
        return ApprovalResponded(approval)
    return ApprovalDenied(approval)
