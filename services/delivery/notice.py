"""What a channel is given to show: the request as a reviewer must see it, and where to decide."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a request ended, for the channels that carried it (so nobody acts on a stale one)."""

    workspace_id: str
    approval_id: str
    title: str
    status: str  # approved, rejected, expired, cancelled or responded (reason: the message)
    decided_by: str | None
    reason: str | None
    web_url: str
    rerun: bool = False  # rejected: the person asks the requester for a new request
    # approved: what may run (the request's own unless an approver edited it), for a caller
    # told by a callback (resume_url) rather than by reading the approval
    approved_digest: str | None = None
    approved_action: dict[str, Any] | None = None
    approved_payload: Any = None

    def line(self) -> str:
        if self.status == "responded":  # not a decision: say so, with the person's message
            return f"{self.title}: answered by {self.decided_by} instead of deciding: {self.reason}"
        by = f" by {self.decided_by}" if self.decided_by else ""
        why = f": {self.reason}" if self.reason else ""
        again = " (a new request is asked for)" if self.rerun else ""
        return f"{self.title}: {self.status}{by}{why}{again}"


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    approval_id: str
    title: str
    summary: str
    risk_level: str
    requested_by: str
    on_behalf_of: str | None
    skill_name: str
    action: dict[str, Any]  # kind, mode, provider, destination, scope, max_credits, preview
    proposed_payload: Any
    digest: str
    expires_at: datetime
    quorum: int
    spend: dict[str, Any] | None  # the budget picture, when there is a budget
    web_url: str  # the detail page in the web inbox
    # The workspace requires a passkey to decide it: only the web inbox can, so a channel
    # shows no Approve/Reject of its own, says so, and links to the page.
    passkey: bool = False

    PASSKEY_LINE = "Deciding this needs your passkey: approve or reject it in the web inbox."

    @property
    def edit_url(self) -> str:
        """The web page with its "Edit, then approve" form open: a channel cannot edit in place."""
        return f"{self.web_url}#edit"

    def facts(self) -> list[tuple[str, str]]:
        """The review fields as label and text, for channels that show a list."""
        action, scope = self.action, self.action.get("scope") or {}
        where = ", ".join(
            f"{k} {scope[k]}" for k in ("table", "column", "workflow") if scope.get(k)
        )
        rows = scope.get("row_count")
        ceiling = action.get("max_credits")
        return [
            ("Risk", self.risk_level),
            ("Requested by", self.requested_by + (f" for {self.on_behalf_of}"
                                                  if self.on_behalf_of else "")),
            ("Scope", (where or "—") + (f" · {rows} rows" if rows is not None else "")),
            ("Provider or integration", " · ".join(
                str(v) for v in (action.get("kind"), action.get("provider")) if v)),
            ("Mode", str(action.get("mode"))),
            ("Credit ceiling", "none" if ceiling is None else f"{ceiling:g}"),
            ("Destination", str(action.get("destination") or "—")),
            ("Expires", self.expires_at.strftime("%Y-%m-%d %H:%M UTC")),
        ]  # fmt: skip
