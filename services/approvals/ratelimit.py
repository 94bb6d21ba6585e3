"""A workspace's limits on prompts: how many requests one requester may hold pending, and how
many it may make in any hour.

Pure, like the budget. Each requester of a workspace has one count (an aggregate keyed by
workspace and requester), moved by a ``RequestCounted`` event saved in the same transaction as
the request it counts, so two concurrent requests conflict on its version and the loser is
decided again against the winner's count: a limit of N lets exactly N through. Each event
carries the whole count after it, so the count's size is bounded by the limits and loading it
reads only its last event.

An approval leaves the pending count when it ends, whichever way (approved, rejected, expired,
cancelled, or any outcome added later): the count is not moved by those decisions (they would
all contend on it), but a request that finds its requester at the limit asks the approvals
themselves which of them still wait (``still_pending``), and the event it stores keeps only those.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import events
from approvals.services.approvals.errors import RateLimited

if TYPE_CHECKING:
    from collections.abc import Callable

    from approvals.schemas.workspace import Limits

LIMITS_NAMESPACE = UUID("0b7e3c52-8d1a-4f6e-9a2b-3c4d5e6f7a8b")
WINDOW = timedelta(hours=1)


def count_key(workspace_id: str, requester: str) -> UUID:
    return uuid5(LIMITS_NAMESPACE, f"requests\x00{workspace_id}\x00{requester}")


class RequesterCount(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    workspace_id: str
    requester: str
    pending: tuple[events.PendingHeld, ...]  # as last counted, oldest first
    recent: tuple[datetime, ...]  # when its requests came in, as last counted, oldest first


def admit(
    count: RequesterCount | None,
    limits: Limits,
    requested: events.Requested,
    still_pending: Callable[[UUID], bool],
    now: datetime,
) -> events.RequestCounted:
    """Count ``requested`` against its requester's limits, or raise RateLimited (nothing to
    store) with ``retry_after_s``: for the hourly limit, when the oldest request of the last
    hour leaves it; for the pending limit, when the first of the pending requests expires (a
    decision may free a place sooner, so it is the latest a caller needs to wait).

    ``still_pending`` is asked only at the pending limit, for each request counted as pending
    and not yet past its deadline."""
    requester = requested.requested_by
    pending = tuple(h for h in count.pending if h.expires_at > now) if count else ()
    recent = tuple(t for t in count.recent if t > now - WINDOW) if count else ()
    if limits.max_requests_per_hour is not None:
        if len(recent) >= limits.max_requests_per_hour:
            wait = min(recent) + WINDOW - now
            raise _refusal("max_requests_per_hour", limits.max_requests_per_hour, requester, wait)
        recent = (*recent, now)
    else:
        recent = ()
    most = limits.max_pending_per_requester
    if most is not None:
        if len(pending) >= most:
            pending = tuple(h for h in pending if still_pending(h.approval_id))
        if len(pending) >= most:
            wait = min(h.expires_at for h in pending) - now
            raise _refusal("max_pending_per_requester", most, requester, wait)
        held = events.PendingHeld(
            approval_id=requested.approval_id, expires_at=requested.expires_at
        )
        pending = (*pending, held)
    else:
        pending = ()
    return events.RequestCounted(
        event_id=uuid4(),
        aggregate_id=count_key(requested.workspace_id, requester),
        version=(count.version if count else 0) + 1,
        workspace_id=requested.workspace_id,
        occurred_at=now,
        actor="service:approvals",
        requester=requester,
        approval_id=requested.approval_id,
        pending=pending,
        recent=recent,
    )


def _refusal(rule: str, limit: int, requester: str, wait: timedelta) -> RateLimited:
    what = "pending requests" if rule == "max_pending_per_requester" else "requests in an hour"
    retry_after_s = max(1, int(-(-wait.total_seconds() // 1)))  # whole seconds, rounded up
    return RateLimited(
        f"{requester} already has {limit} {what}, the most this workspace allows "
        f"({rule}); try again in {retry_after_s} s",
        rule=rule,
        limit=limit,
        requester=requester,
        retry_after_s=retry_after_s,
    )


def evolve(count: RequesterCount | None, event: events.RequestCounted) -> RequesterCount:
    return RequesterCount(
        id=event.aggregate_id,
        version=event.version,
        workspace_id=event.workspace_id,
        requester=event.requester,
        pending=event.pending,
        recent=event.recent,
    )
