"""The limits on prompts as a pure rule: a requester's count, the request, and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from approvals.schemas import events
from approvals.schemas.workspace import Limits, parse_workspace
from approvals.services.approvals import ratelimit
from approvals.services.approvals.aggregates import evolve
from approvals.services.approvals.errors import RateLimited

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def requested(at: datetime, expires_in: timedelta = timedelta(hours=2)) -> events.Requested:
    from approvals.schemas.commands import Action

    return events.Requested(
        event_id=uuid4(), approval_id=uuid4(), version=1, workspace_id="acme", occurred_at=at,
        actor="service:agent", requested_by="service:agent", skill_name="s",
        skill_execution_id="e", title="t", summary="", risk_level="low",
        action=Action(kind="crm_write", mode="live"), digest="0" * 64, expires_at=at + expires_in,
    )  # fmt: skip


def run(
    limits: Limits, times: list[datetime], pending: set[UUID] | None = None
) -> tuple[ratelimit.RequesterCount | None, list[UUID], RateLimited | None]:
    """Count a request at each time in turn; stop at the first refusal. ``pending`` (None: all)
    are the approvals that still wait."""
    count: ratelimit.RequesterCount | None = None
    stored: list[UUID] = []
    for at in times:
        asked = requested(at)
        try:
            counted = ratelimit.admit(count, limits, asked,
                                      lambda a: pending is None or a in pending, at)  # fmt: skip
        except RateLimited as refused:
            return count, stored, refused
        count = evolve(count, counted)
        stored.append(asked.approval_id)
    return count, stored, None


def test_the_pending_limit_refuses_the_next_request_with_the_first_expiry() -> None:
    times = [T0 + timedelta(minutes=m) for m in range(4)]
    count, stored, refused = run(Limits(max_pending_per_requester=3), times)
    assert len(stored) == 3
    assert refused is not None
    assert refused.code == "rate_limited"
    # The first expires at T0 + 2 h; the refusal comes at T0 + 3 min.
    assert refused.details["retry_after_s"] == 2 * 3600 - 3 * 60
    assert refused.details["rule"] == "max_pending_per_requester"
    assert refused.details["limit"] == 3
    assert count is not None
    assert count.version == 3
    assert count.recent == ()


def test_an_approval_that_ended_or_expired_leaves_the_pending_count() -> None:
    limits = Limits(max_pending_per_requester=2)
    count, stored, _ = run(limits, [T0, T0 + timedelta(minutes=1)])
    assert count is not None
    # Check: the first was decided: the next request finds only one still waiting.
    later = T0 + timedelta(minutes=5)
    asked = requested(later)
    counted = ratelimit.admit(count, limits, asked, lambda a: a != stored[0], later)
    assert [h.approval_id for h in counted.pending] == [stored[1], asked.approval_id]
    # Check: past its deadline an approval no longer counts, whatever its status says.
    after_expiry = T0 + timedelta(hours=2, seconds=1)
    again = ratelimit.admit(count, limits, requested(after_expiry), lambda a: True, after_expiry)
    assert len(again.pending) == 2


def test_the_hourly_limit_refuses_until_the_oldest_request_leaves_the_hour() -> None:
    limits = Limits(max_requests_per_hour=3)
    times = [T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]
    count, stored, _ = run(limits, [*times, T0 + timedelta(minutes=30)], pending=set())
    assert len(stored) == 3
    at = T0 + timedelta(minutes=30)
    with pytest.raises(RateLimited) as refused:
        ratelimit.admit(count, limits, requested(at), lambda a: False, at)
    assert refused.value.details["retry_after_s"] == 30 * 60
    assert refused.value.details["rule"] == "max_requests_per_hour"
    # Check: an hour after the first, one place is free again (and only one).
    hour_later = T0 + timedelta(hours=1, seconds=1)
    counted = ratelimit.admit(count, limits, requested(hour_later), lambda a: False, hour_later)
    assert counted.recent == (*times[1:], hour_later)
    count = evolve(count, counted)
    with pytest.raises(RateLimited) as again:
        ratelimit.admit(count, limits, requested(hour_later), lambda a: False, hour_later)
    assert again.value.details["retry_after_s"] == 10 * 60 - 1


def test_the_limits_are_read_from_the_workspace_file() -> None:
    settings = parse_workspace(
        '[members."user:admin"]\nroles = ["admin"]\n'
        "[limits]\nmax_pending_per_requester = 5\nmax_requests_per_hour = 20\n"
    )
    assert settings.limits == Limits(max_pending_per_requester=5, max_requests_per_hour=20)
