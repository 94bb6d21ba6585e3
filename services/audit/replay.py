"""Rebuilding state from the log, up to a position or a point in time.

The same evolution the command service uses
(``approvals.services.approvals.aggregates.evolve``) folds
each event into its aggregate: approvals, budgets, workspaces' settings, allowances, API keys.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from approvals.schemas.audit import ApprovalState, BudgetState, Replayed, WorkspaceState
from approvals.schemas.codec import event_decoder
from approvals.services.approvals import budget, domain
from approvals.services.approvals.aggregates import EVOLVERS
from approvals.services.audit.source import bulk

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime
    from uuid import UUID

    from approvals.services.approvals.notification_log import Record


class Replay:
    """Feed it the log in order (sections of records); it holds the state they make."""

    def __init__(
        self,
        *,
        workspace: str | None = None,
        approval_id: UUID | None = None,
        up_to: int | None = None,
        at: datetime | None = None,
    ) -> None:
        self.workspace, self.approval_id, self.up_to, self.at = workspace, approval_id, up_to, at
        self.state: dict[int, Any] = {}  # by aggregate id (as an int)
        self.position = 0
        self.events = 0

    def feed(self, records: Sequence[Record]) -> bool:
        """Apply a section; False once the position or time bound is passed (stop reading)."""
        if not records:
            return True
        decoded = event_decoder.decode_many([r.state for r in records])
        state, evolvers = self.state, EVOLVERS
        up_to, at, workspace, approval_id = self.up_to, self.at, self.workspace, self.approval_id
        if up_to is None and at is None and workspace is None and approval_id is None:
            for event in decoded:  # everything: the fast path
                key = event.originator_id.int  # an int hashes in C; a UUID in Python
                state[key] = evolvers[type(event)](event, state.get(key))
            self.position = records[-1].id
            self.events += len(decoded)
            return True
        for record, event in zip(records, decoded, strict=True):
            if up_to is not None and record.id > up_to:
                return False
            if at is not None and event.occurred_at > at:
                continue  # a later event (commit order and clocks can differ by a little)
            self.position = record.id
            if workspace is not None and event.workspace_id != workspace:
                continue
            if approval_id is not None and approval_id != getattr(event, "approval_id", None):
                continue  # its own events, and the budget and allowance events that name it
            key = event.originator_id.int
            state[key] = evolvers[type(event)](event, state.get(key))
            self.events += 1
        return True

    def approvals(self) -> list[domain.Approval]:
        return [s for s in self.state.values() if isinstance(s, domain.Approval)]

    def result(
        self, source: Literal["store", "stream", "export"], *, details: bool = False
    ) -> Replayed:
        approvals = self.approvals()
        by_workspace: dict[str, Counter[str]] = {}
        for approval in approvals:
            by_workspace.setdefault(approval.workspace_id, Counter())[approval.status] += 1
        budgets: dict[str, list[BudgetState]] = {}
        for held in self.state.values():
            if isinstance(held, budget.Budget):
                budgets.setdefault(held.workspace_id, []).append(BudgetState(
                    workspace_id=held.workspace_id, period=held.period, cap=held.cap,
                    committed=held.committed, held=len(held.reservations),
                ))  # fmt: skip
        workspaces = [
            WorkspaceState(
                workspace_id=ws,
                approvals=dict(sorted(by_workspace.get(ws, Counter()).items())),
                budgets=sorted(budgets.get(ws, []), key=lambda b: b.period),
            )
            for ws in sorted(set(by_workspace) | set(budgets))
        ]
        shown = approvals if details or self.approval_id is not None else []
        return Replayed(
            source=source, position=self.position, events=self.events,
            up_to_position=self.up_to, at=self.at, workspaces=workspaces,
            approvals=[approval_state(a) for a in sorted(shown, key=lambda a: str(a.id))],
        )  # fmt: skip


def approval_state(approval: domain.Approval) -> ApprovalState:
    request = approval.request
    return ApprovalState(
        id=approval.id, workspace_id=approval.workspace_id, status=approval.status,
        version=approval.version, title=request.title, requested_by=request.requested_by,
        digest=request.digest, quorum=request.quorum, votes=approval.votes,
        decided_by=approval.decided_by, max_credits=request.action.max_credits,
        redeemed_at=approval.redeemed_at,
        credits_used=approval.run.credits_used if approval.run else None,
        modified_at=approval.modified_at,
    )  # fmt: skip


def replay_all(sections: Iterable[Sequence[Record]], replay: Replay) -> Replay:
    with bulk():
        for section in sections:
            if not replay.feed(section):
                break
    return replay
