"""The report's arithmetic, on the story the version fixtures tell (tests/fixtures/events)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from approvals.schemas.events import SCHEMA_VERSION
from approvals.services.audit.report import Summary, summarize
from approvals.services.audit.source import export_sections

LOG = Path(__file__).parents[1] / "fixtures" / "events" / f"v{SCHEMA_VERSION}" / "log.jsonl"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the story's clock (see make.py)


def report(summary: Summary) -> dict[str, dict[str, object]]:
    with LOG.open("rb") as lines:
        done = summarize(export_sections(lines), summary)
    return {row.period: {k: getattr(row, k) for k in row.__struct_fields__} for row in done.rows}


def test_each_event_counts_in_its_period_and_people_are_timed() -> None:
    rows = report(Summary("day"))
    assert set(rows) == {"2026-11-02", "2026-11-03"}
    first, second = rows["2026-11-02"], rows["2026-11-03"]
    counts = [first[k] for k in ("requests", "approved", "rejected", "expired", "cancelled",
                                 "pending")]  # fmt: skip
    assert counts == [6, 3, 1, 0, 1, 0]  # the expiry came the next day
    assert second["expired"] == 1
    assert second["requests"] == 0
    # People's decisions: 28,880 s, 2 s and 1 s; the standing permission's is not timed.
    assert first["median_decision_s"] == 2
    assert (first["credits_approved"], first["credits_used"]) == (155, 80)
    assert first["top_requesters"] == [("service:agent", 6)]


def test_a_range_counts_what_happened_in_it_and_times_decisions_on_earlier_requests() -> None:
    rows = report(Summary("day", since=T0 + timedelta(hours=1), until=T0 + timedelta(days=1)))
    assert set(rows) == {"2026-11-02"}
    [row] = rows.values()
    assert (row["requests"], row["approved"], row["pending"]) == (0, 1, 0)
    assert row["median_decision_s"] == 28880  # asked at 09:00:20, approved at 17:01:40
    assert (row["credits_approved"], row["credits_used"]) == (100, 80)


def test_a_workspace_filter_and_a_month() -> None:
    assert list(report(Summary("month", workspace="fixtures"))) == ["2026-11"]
    assert report(Summary("month", workspace="other")) == {}


def test_an_answer_instead_of_a_decision_ends_a_request_and_is_timed() -> None:
    fixtures = LOG.parent
    answered = json.loads((fixtures / "responded.json").read_bytes())
    asked = {**json.loads((fixtures / "requested.json").read_bytes()),
             "approval_id": answered["approval_id"]}  # fmt: skip
    lines = io.BytesIO(b"".join(
        json.dumps({**event, "position": n}).encode() + b"\n"
        for n, event in enumerate((asked, answered), 1)
    ))  # fmt: skip
    [row] = summarize(export_sections(lines), Summary("day")).rows
    # Check: counted as responded, no longer pending, and the person's answer is timed.
    assert (row.requests, row.responded, row.pending, row.rejected) == (1, 1, 0, 0)
    assert row.median_decision_s == 61  # asked at 09:00:10, answered at 09:01:11
