"""A summary per workspace and period, and a chart of decisions over time."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from approvals.schemas import events
from approvals.schemas.audit import Report, ReportRow
from approvals.schemas.codec import event_decoder
from approvals.services.approvals.budget import period_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime
    from pathlib import Path
    from uuid import UUID

    from approvals.services.approvals.notification_log import Record

Period = Literal["day", "week", "month"]
OUTCOMES = ("approved", "rejected", "expired", "cancelled", "responded")


@dataclass
class _Bucket:
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    decision_s: list[float] = field(default_factory=list)
    credits_approved: float = 0.0
    credits_used: float = 0.0
    requesters: Counter[str] = field(default_factory=Counter)


@dataclass
class _Asked:
    workspace: str
    at: datetime
    period: str
    requested_by: str
    max_credits: float | None
    counted: bool = True  # asked within the range
    outcome: str | None = None


class Summary:
    """Feed it the log; each event counts in the period it happened in (a request in the period
    it was made, a decision in the period it was made)."""

    def __init__(
        self,
        period: Period,
        *,
        workspace: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self.period, self.workspace, self.since, self.until = period, workspace, since, until
        self.asked: dict[UUID, _Asked] = {}
        self.buckets: dict[tuple[str, str], _Bucket] = {}

    def feed(self, records: Sequence[Record]) -> None:
        for event in event_decoder.decode_many([r.state for r in records]):
            if self.workspace is not None and event.workspace_id != self.workspace:
                continue
            if not isinstance(event, events.Event):
                continue
            at = event.occurred_at
            period = period_of(self.period, at)
            in_range = not ((self.since and at < self.since) or (self.until and at >= self.until))
            if isinstance(event, events.Requested):
                # Kept even before the range: a decision in it is still timed and credited.
                self.asked[event.approval_id] = _Asked(
                    event.workspace_id, at, period, event.requested_by, event.action.max_credits,
                    counted=in_range,
                )  # fmt: skip
            if not in_range:
                continue
            bucket = self.buckets.setdefault((event.workspace_id, period), _Bucket())
            if isinstance(event, events.Requested):
                bucket.requests += 1
                bucket.requesters[event.requested_by] += 1
                continue
            asked = self.asked.get(event.approval_id)
            if isinstance(event, events.RunReported):
                bucket.credits_used += event.credits_used
            elif isinstance(event, events.Approved | events.Rejected | events.Expired
                            | events.Cancelled | events.Responded):  # fmt: skip
                bucket.outcomes[event.event_type] += 1
                if asked is None:
                    continue  # asked before the log begins (a filtered export): not timed
                asked.outcome = event.event_type
                by_person = not event.actor.startswith(("policy:", "service:"))
                decided = events.Approved | events.Rejected | events.Responded
                if isinstance(event, decided) and by_person:
                    bucket.decision_s.append((at - asked.at).total_seconds())
                if isinstance(event, events.Approved):
                    bucket.credits_approved += asked.max_credits or 0.0

    def report(self, top: int = 3) -> Report:
        pending: Counter[tuple[str, str]] = Counter()
        for asked in self.asked.values():
            if asked.outcome is None and asked.counted:
                pending[(asked.workspace, asked.period)] += 1
        rows = []
        for (workspace, period), b in sorted(self.buckets.items()):
            rows.append(ReportRow(
                workspace_id=workspace, period=period, requests=b.requests,
                approved=b.outcomes["approved"], rejected=b.outcomes["rejected"],
                expired=b.outcomes["expired"], cancelled=b.outcomes["cancelled"],
                responded=b.outcomes["responded"],
                pending=pending[(workspace, period)],
                median_decision_s=statistics.median(b.decision_s) if b.decision_s else None,
                credits_approved=round(b.credits_approved, 6),
                credits_used=round(b.credits_used, 6),
                top_requesters=b.requesters.most_common(top),
            ))  # fmt: skip
        return Report(period=self.period, since=self.since, until=self.until, rows=rows)


def summarize(sections: Iterable[Sequence[Record]], summary: Summary) -> Report:
    for section in sections:
        summary.feed(section)
    return summary.report()


def chart(report: Report, path: Path) -> None:
    """Decisions per period (stacked: approved, rejected, expired, cancelled, responded) with
    the requests as a line; PNG or SVG by the file's suffix."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    periods = sorted({row.period for row in report.rows})
    totals = {p: Counter[str]() for p in periods}
    for row in report.rows:
        counts = {"requests": row.requests, **{o: getattr(row, o) for o in OUTCOMES}}
        totals[row.period].update(counts)
    width = max(6.0, 0.35 * len(periods) + 2)
    figure, axes = plt.subplots(figsize=(width, 4), layout="constrained")
    base = [0] * len(periods)
    colours = {
        "approved": "#2e7d32",
        "rejected": "#c62828",
        "expired": "#9e9e9e",
        "cancelled": "#f9a825",
        "responded": "#6a1b9a",
    }
    for outcome in OUTCOMES:
        heights = [totals[p][outcome] for p in periods]
        axes.bar(periods, heights, bottom=base, label=outcome, color=colours[outcome])
        base = [b + h for b, h in zip(base, heights, strict=True)]
    axes.plot(periods, [totals[p]["requests"] for p in periods], color="#1565c0", marker=".",
              label="requests")  # fmt: skip
    workspaces = sorted({row.workspace_id for row in report.rows})
    axes.set_title(f"Decisions per {report.period}: {', '.join(workspaces) or 'no events'}")
    axes.set_ylabel("count")
    axes.legend(loc="upper left", fontsize="small")
    axes.tick_params(axis="x", labelrotation=60, labelsize="small")
    figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(figure)
