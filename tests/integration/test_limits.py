"""A workspace's limits on prompts over a real nats-server, on SQLite and PostgreSQL: 200
concurrent requests from one requester against a pending limit of N store exactly N, across two
command service instances; the hourly limit follows the clock; a refusal stores nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.schemas import commands
from approvals.schemas.codec import event_decoder
from approvals.schemas.events import RequestCounted, Requested
from approvals.schemas.workspace import Limits, Member, WorkspaceSettings
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.errors import RateLimited
from approvals.services.approvals.service import CommandService
from approvals.services.approvals.store import store_env
from tests.helpers import assert_error, send

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

ADMIN = "user:admin"
PENDING_LIMIT = 7
LIMITED = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        "user:ana": Member(roles=("approver",)),
        "service:agent": Member(roles=("requester",)),
        "service:other": Member(roles=("requester",)),
    },
    limits=Limits(max_pending_per_requester=PENDING_LIMIT),
)
REQUEST: dict[str, Any] = {
    "requested_by": "service:agent",
    "skill_name": "crm-sync",
    "skill_execution_id": "e",
    "title": "Sync contacts",
    "summary": "",
    "risk_level": "medium",
    "action": {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42"},
    "expires_in_s": 600,
}


def stored(app: Approvals | None, workspace_id: str) -> list[Any]:
    assert app is not None
    found = [event_decoder.decode(n.state) for n in app.notifications(1, 1_000_000)]
    return [e for e in found if e.workspace_id == workspace_id]


def requests_of(app: Approvals | None, workspace_id: str) -> list[Requested]:
    return [e for e in stored(app, workspace_id) if isinstance(e, Requested)]


@pytest.mark.timeout(300)
async def test_200_concurrent_requests_against_a_pending_limit_store_exactly_n(
    command_service: Started, command_settings: Settings
) -> None:
    first, acme = command_service
    client = ApprovalsClient(acme.nc, "limited", reply_timeout=30.0)
    assert (await send(client, "configure", {"settings": LIMITED, "by": ADMIN}))["ok"]
    # A second writer competes for the count (deciding what it receives, not handing it over).
    async with CommandService(msgspec.structs.replace(command_settings, hand_over_commands=False)):
        replies = await asyncio.gather(*(
            send(client, "request", {**REQUEST, "skill_execution_id": f"r{i}"})
            for i in range(200)
        ))  # fmt: skip
    asked = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    # Check: exactly N were stored; every other request is refused with when to try again.
    assert len(asked) == PENDING_LIMIT, [r["error"] for r in refused if "error" in r][:3]
    assert {r["outcome"] for r in asked} == {"approval_required"}
    assert len(refused) == 200 - PENDING_LIMIT
    for reply in refused:
        assert_error(reply, "rate_limited")
        details = reply["error"]["details"]
        assert details["rule"] == "max_pending_per_requester"
        assert details["limit"] == PENDING_LIMIT
        assert isinstance(details["retry_after_s"], int | float)
        # At most the oldest pending's 600 s to expiry, rounded up to whole seconds: a refused
        # command's clock may read a fraction of a second before that request was stamped.
        assert 0 < details["retry_after_s"] <= 601
    # Check: nothing of a refused request was stored: N requests, N counts.
    held = {r["approval"]["id"] for r in asked}
    assert {str(e.approval_id) for e in requests_of(first.app, "limited")} == held
    counts = [e for e in stored(first.app, "limited") if isinstance(e, RequestCounted)]
    assert [e.version for e in counts] == list(range(1, PENDING_LIMIT + 1))
    # Check: an idempotent retry of a stored request is its answer again, not another request.
    keyed = await send(client, "request", {**REQUEST, "idempotency_key": "k1"})
    assert_error(keyed, "rate_limited")  # at the limit, a new key is a new request
    # Check: another requester of the workspace has a count of its own.
    other = await send(client, "request", {**REQUEST, "requested_by": "service:other",
                                           "idempotency_key": "k2"})  # fmt: skip
    assert other["outcome"] == "approval_required", other
    again = await send(client, "request", {**REQUEST, "requested_by": "service:other",
                                           "idempotency_key": "k2"})  # fmt: skip
    assert (again["outcome"], again["replayed"]) == ("approval_required", True)
    # Check: a decision frees a place, and only one.
    first_one = asked[0]["approval"]
    rejected = await send(client, "reject", {"approval_id": first_one["id"],
                                             "approver": "user:ana"})  # fmt: skip
    assert rejected["outcome"] == "rejected", rejected
    freed = await send(client, "request", {**REQUEST, "skill_execution_id": "freed"})
    assert freed["outcome"] == "approval_required", freed
    assert_error(await send(client, "request", {**REQUEST, "skill_execution_id": "x"}),
                 "rate_limited")  # fmt: skip
    assert len(requests_of(first.app, "limited")) == PENDING_LIMIT + 2  # with service:other's


def test_the_hourly_limit_follows_the_clock_and_a_refusal_stores_nothing(
    settings: Settings,
) -> None:
    app = Approvals(store_env(settings))
    hourly = msgspec.structs.replace(LIMITED, limits=Limits(max_requests_per_hour=3))
    app.handle("hourly", commands.Configure(settings=hourly, by=ADMIN))
    ask = msgspec.convert(REQUEST, commands.Request)
    t0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    for minutes in (0, 10, 20):
        app.handle("hourly", ask, t0 + timedelta(minutes=minutes))
    # Check: the fourth in the hour is refused until the first leaves it, 30 minutes later.
    before = app.last_notification_id()
    with pytest.raises(RateLimited) as refused:
        app.handle("hourly", ask, t0 + timedelta(minutes=30))
    assert refused.value.details["retry_after_s"] == 30 * 60
    assert app.last_notification_id() == before
    # Check: an hour after the first, one more may come, and then none until the second leaves.
    hour_later = t0 + timedelta(hours=1)
    assert app.handle("hourly", ask, hour_later).outcome == "approval_required"
    with pytest.raises(RateLimited) as again:
        app.handle("hourly", ask, hour_later + timedelta(seconds=1))
    assert again.value.details["retry_after_s"] == 10 * 60 - 1
    assert len(requests_of(app, "hourly")) == 4
