"""Spend caps, redemption and runs over a real nats-server, on SQLite and PostgreSQL: committed
credits never pass the cap under concurrent approvals, an approval runs once and only as
approved, and a run's usage settles its reservation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.client import ApprovalsClient, ApprovalsError
from approvals.schemas.codec import event_decoder
from approvals.schemas.events import CreditsReserved, CreditsSettled, Requested
from approvals.schemas.workspace import Budget, Member, WorkspaceSettings
from approvals.services.approvals import budget
from approvals.services.approvals.service import CommandService
from tests.helpers import assert_error, eventually, send

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

ADMIN = "user:admin"
SPEND = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        "user:ana": Member(roles=("approver",)),
        "user:bo": Member(roles=("approver",)),
        "service:agent": Member(roles=("requester",)),
        "service:runner": Member(roles=("requester",)),
    },
    budget=Budget(period="month", cap=1000, max_per_run=50),
)
REQUEST: dict[str, Any] = {
    "requested_by": "service:agent",
    "skill_name": "enrich",
    "skill_execution_id": "e",
    "title": "Enrich 30 rows",
    "summary": "",
    "risk_level": "medium",
    "action": {"kind": "provider_call", "mode": "live", "provider": "clearbit",
               "max_credits": 30},
    "proposed_payload": {"rows": [1, 2, 3]},
}  # fmt: skip


async def workspace(client: ApprovalsClient, name: str, settings: WorkspaceSettings) -> Any:
    other = ApprovalsClient(client.nc, name, reply_timeout=10.0)
    reply = await send(other, "configure", {"settings": settings, "by": ADMIN})
    assert reply["ok"], reply
    return other


async def ask(client: ApprovalsClient, **changes: Any) -> dict[str, Any]:
    reply = await send(client, "request", {**REQUEST, **changes})
    assert reply["outcome"] == "approval_required", reply
    approval: dict[str, Any] = reply["approval"]
    return approval


def approve(approval: dict[str, Any], approver: str = "user:ana") -> dict[str, Any]:
    return {"approval_id": approval["id"], "approver": approver, "digest": approval["digest"]}


def redeem(approval: dict[str, Any], digest: str | None = None) -> dict[str, Any]:
    return {"approval_id": approval["id"], "digest": digest or approval["digest"],
            "executor": "service:runner"}  # fmt: skip


def budget_events(service: CommandService, workspace_id: str) -> list[Any]:
    assert service.app is not None
    found = [event_decoder.decode(n.state) for n in service.app.notifications(1, 1_000_000)]
    return [
        e for e in found
        if isinstance(e, CreditsReserved | CreditsSettled) and e.workspace_id == workspace_id
    ]  # fmt: skip


@pytest.mark.timeout(180)
async def test_100_concurrent_approvals_never_commit_more_than_the_cap(
    command_service: Started, command_settings: Settings
) -> None:
    first, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    approvals = await asyncio.gather(*(ask(client, skill_execution_id=f"e{i}") for i in range(100)))
    async with CommandService(command_settings):  # a second writer competes for the budget
        replies = await asyncio.gather(*(send(client, "approve", approve(a)) for a in approvals))
    granted = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    # Check: 33 ceilings of 30 fit a cap of 1,000; every other approval is refused with numbers.
    assert len(granted) == 33
    assert len(refused) == 67
    for reply in refused:
        assert_error(reply, "spend_cap_exceeded")
        numbers = reply["error"]["details"]
        assert (numbers["cap"], numbers["committed"], numbers["ceiling"]) == (1000, 990, 30)
        assert numbers["remaining"] == 10
    reserved = budget_events(first, "spend")
    assert len(reserved) == 33
    assert [e.committed for e in reserved] == [30.0 * k for k in range(1, 34)]
    assert {str(e.approval_id) for e in reserved} == {r["approval"]["id"] for r in granted}
    # Check: the refused approvals are still pending, for a person to decide when money frees up.
    assert all(r["approval"]["status"] == "approved" for r in granted)


def requests_in(service: CommandService, *workspace_ids: str) -> list[Any]:
    assert service.app is not None
    found = [event_decoder.decode(n.state) for n in service.app.notifications(1, 1_000_000)]
    return [e for e in found if isinstance(e, Requested) and e.workspace_id in workspace_ids]


async def test_a_ceiling_that_can_never_fit_is_refused_when_requested_and_nothing_is_stored(
    command_service: Started,
) -> None:
    service, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    held = await ask(client, skill_execution_id="held")
    await send(client, "approve", approve(held))  # 30 of 1,000 committed
    capped = await workspace(acme, "capped", msgspec.structs.replace(
        SPEND, budget=Budget(period="week", cap=40)))  # fmt: skip
    # Check: over the per-run maximum, the request (and its dry twin, check) is refused at once
    # with the numbers, instead of waiting as pending for the spend-cap service to reject it.
    too_big = {**REQUEST, "action": {**REQUEST["action"], "max_credits": 60}}
    period = budget.period_of("month", datetime.now(UTC))
    for verb in ("check", "request"):
        reply = await send(client, verb, too_big)
        assert_error(reply, "spend_cap_exceeded")
        assert reply["error"]["details"] == {
            "rule": "max_per_run", "ceiling": 60, "max_per_run": 50, "cap": 1000,
            "committed": 30, "remaining": 970, "period": period,
        }, verb  # fmt: skip
        assert "per-run maximum 50" in reply["error"]["message"]
    # Check: over the whole cap it can never fit either.
    over_cap = await send(
        capped, "request", {**REQUEST, "action": {**REQUEST["action"], "max_credits": 45}}
    )
    assert_error(over_cap, "spend_cap_exceeded")
    details = over_cap["error"]["details"]
    assert (details["rule"], details["ceiling"], details["cap"], details["remaining"]) == (
        "cap", 45, 40, 40,
    )  # fmt: skip
    # Check: nothing was stored for the refused requests; one that fits is still asked for.
    assert [str(e.approval_id) for e in requests_in(service, "spend", "capped")] == [held["id"]]
    await ask(capped, action={**REQUEST["action"], "max_credits": 40})


async def test_a_ceiling_over_a_per_run_maximum_lowered_since_the_request_is_refused_approval(
    command_service: Started,
) -> None:
    service, acme = command_service
    loose = msgspec.structs.replace(SPEND, budget=Budget(period="month", cap=1000, max_per_run=100))
    client = await workspace(acme, "spend", loose)
    big = await ask(client, action={**REQUEST["action"], "max_credits": 60})
    await workspace(acme, "spend", SPEND)  # the admin lowers the per-run maximum to 50
    reply = await send(client, "approve", approve(big))
    assert_error(reply, "spend_cap_exceeded")
    assert (reply["error"]["details"]["rule"], reply["error"]["details"]["max_per_run"]) == (
        "max_per_run", 50,
    )  # fmt: skip
    assert budget_events(service, "spend") == []


async def test_an_approval_is_redeemed_once_and_only_for_the_approved_action(
    command_service: Started,
) -> None:
    _, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    pending = await ask(client, skill_execution_id="pending")
    # Check: nothing pending, rejected or unknown can be redeemed.
    assert_error(await send(client, "redeem", redeem(pending)), "not_approved")
    rejected = await ask(client, skill_execution_id="rejected")
    await send(client, "reject", {"approval_id": rejected["id"], "approver": "user:bo"})
    assert_error(await send(client, "redeem", redeem(rejected)), "not_approved")
    approval = await ask(client, skill_execution_id="run")
    approved = await send(client, "approve", approve(approval))
    assert approved["outcome"] == "approved"
    # Check: a changed payload is another digest, refused without handing out the approved one.
    changed = await ask(client, skill_execution_id="run", proposed_payload={"rows": [1, 2, 3, 4]})
    mismatch = await send(client, "redeem", redeem(approval, changed["digest"]))
    assert_error(mismatch, "digest_mismatch")
    assert approval["digest"] not in msgspec.json.encode(mismatch).decode()
    # Check: the client sends what it is about to run, and hears which part differs.
    with pytest.raises(ApprovalsError) as refused:
        await client.redeem(approval["id"], action={**REQUEST["action"], "max_credits": 31},
                            payload={"rows": [1, 2]}, executor="service:runner")  # fmt: skip
    assert refused.value.code == "digest_mismatch"
    assert refused.value.details["differs"] == ["action", "proposed_payload"]
    assert refused.value.details["action_fields"] == ["max_credits"]
    assert approval["digest"] not in f"{refused.value.message} {refused.value.details}"
    # Check: from another workspace the approval does not exist.
    other = await workspace(acme, "elsewhere", SPEND)
    assert_error(await send(other, "redeem", redeem(approval)), "not_found")
    # Check: the approved action is redeemed once; a second redeem is refused with who and when.
    first = await send(client, "redeem", redeem(approval))
    assert (first["ok"], first["outcome"]) == (True, "redeemed")
    second = await send(client, "redeem", redeem(approval))
    assert_error(second, "already_redeemed")
    assert second["error"]["details"]["redeemed_by"] == "service:runner"


async def test_a_late_redeem_is_refused(command_service: Started) -> None:
    _, acme = command_service
    quick = msgspec.structs.replace(SPEND, redeem_within_s=1)
    client = await workspace(acme, "quick", quick)
    approval = await ask(client)
    await send(client, "approve", approve(approval))
    # Probe with a wrong digest (refused either way, so nothing is redeemed) until the answer is
    # the deadline: lateness is checked first.
    wrong = redeem(approval, "0" * 64)

    async def deadline_passed() -> bool:
        reply = await send(client, "redeem", wrong)
        return bool(reply["error"]["code"] == "expired")

    await eventually(deadline_passed, within_s=10)
    late = await send(client, "redeem", redeem(approval))
    assert_error(late, "expired")
    assert "redeem_by" in late["error"]["details"]


async def test_a_reported_run_settles_its_reservation_and_over_use_is_flagged(
    command_service: Started,
) -> None:
    service, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    approval = await ask(client)
    await send(client, "approve", approve(approval))
    report = {"approval_id": approval["id"], "credits_used": 35, "outcome": "succeeded",
              "summary": "enriched 3 rows", "external_refs": ["clearbit:job-1"],
              "by": "service:runner"}  # fmt: skip
    # Check: no run before redemption.
    assert_error(await send(client, "report", report), "conflict")
    await send(client, "redeem", redeem(approval))
    reported = await send(client, "report", report)
    assert (reported["ok"], reported["outcome"]) == (True, "run_reported")
    assert_error(await send(client, "report", report), "conflict")
    _, settled = budget_events(service, "spend")
    assert isinstance(settled, CreditsSettled)
    assert (settled.reserved, settled.used, settled.committed) == (30, 35, 35)
    assert service.app is not None
    stored = [
        event_decoder.decode(n.state) for n in service.app.notifications(1, 10_000)
        if str(n.originator_id) == approval["id"]
    ]  # fmt: skip
    assert [e.event_type for e in stored] == ["requested", "approved", "redeemed", "run_reported"]
    assert stored[-1].over_ceiling is True
    assert stored[1].budget_period == budget.period_of("month", stored[1].occurred_at)


async def test_the_budget_query_shows_cap_committed_and_remaining(
    command_service: Started,
) -> None:
    _, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    empty = msgspec.json.decode(await client.query("budget", {}))
    assert (empty["budget"]["committed"], empty["budget"]["remaining"]) == (0, 1000)
    approval = await ask(client)
    await send(client, "approve", approve(approval))
    shown = msgspec.json.decode(await client.query("budget", {}))["budget"]
    assert (shown["cap"], shown["committed"], shown["remaining"], shown["held"]) == (
        1000, 30, 970, 1,
    )  # fmt: skip
    assert shown["period"] == budget.period_of("month", datetime.now(UTC))
    # Check: a workspace without a budget says so.
    plain = await workspace(acme, "plain", msgspec.structs.replace(SPEND, budget=None))
    missing = msgspec.json.decode(await plain.query("budget", {}))
    assert_error(missing, "not_found")
    assert missing["error"]["details"]["kind"] == "budget"
