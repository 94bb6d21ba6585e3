"""Grants over a real nats-server, on SQLite and PostgreSQL: an approver approves one request and
grants similar ones for a while; what the grant covers is approved at once by ``grant:<id>``,
never another destination, never after its revoke or expiry, never past the budget, and a race
of 100 requests against a grant of K runs a day (two command service instances on one store)
never gets more than K approved. The CLI lists and revokes grants."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.schemas import commands
from approvals.schemas.codec import event_decoder
from approvals.schemas.workspace import Budget, Grants, Member, WorkspaceSettings
from approvals.services.approvals.service import CommandService
from tests.helpers import assert_error, send

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

ADMIN = "user:admin"
APPROVALS = str(Path(sys.executable).parent / "approvals")
SETTINGS = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        "user:ana": Member(roles=("approver",)),
        "user:bo": Member(roles=("approver",)),
        "service:agent": Member(roles=("requester",)),
    },
    budget=Budget(period="month", cap=1000),
    grants=Grants(max_hours=24),
)
REQUEST: dict[str, Any] = {
    "requested_by": "service:agent",
    "skill_name": "enrich",
    "title": "Enrich 4 contacts",
    "summary": "Calls Clearbit for 4 contacts",
    "risk_level": "medium",
    "action": {"kind": "provider_call", "mode": "live", "provider": "clearbit",
               "destination": "crm:contacts", "max_credits": 4},
}  # fmt: skip


async def workspace(client: ApprovalsClient, name: str, **changes: Any) -> ApprovalsClient:
    settings = msgspec.structs.replace(SETTINGS, **changes)
    mine = ApprovalsClient(client.nc, name, reply_timeout=30.0)
    reply = await send(mine, "configure", {"settings": settings, "by": ADMIN})
    assert reply["ok"], reply
    return mine


async def ask(client: ApprovalsClient, n: int | str = 0, **action: Any) -> dict[str, Any]:
    body = {**REQUEST, "skill_execution_id": f"e{n}", "action": {**REQUEST["action"], **action}}
    reply = await send(client, "request", body)
    assert reply["ok"], reply
    return reply


async def approve_granting(client: ApprovalsClient, **grant: Any) -> str:
    """Ask once, and have ana approve it granting ``grant``: the grant's id."""
    approval = (await ask(client, "first"))["approval"]
    reply = await send(client, "approve", {
        "approval_id": approval["id"], "approver": "user:ana", "digest": approval["digest"],
        "grant": {"hours": 8, **grant}})  # fmt: skip
    assert (reply["ok"], reply.get("outcome")) == (True, "approved"), reply
    return str(approval["id"])


async def grants(client: ApprovalsClient, every: bool = False) -> list[dict[str, Any]]:
    reply = json.loads(await client.query("grants", {"all": every}))
    assert reply["ok"], reply
    return list(reply["grants"])


async def test_a_grant_approves_a_matching_request_at_once_and_nothing_else(
    command_service: Started,
) -> None:
    service, acme = command_service
    client = await workspace(acme, "grants1")
    grant_id = await approve_granting(client, runs=10)
    # Check: the same requester, kind, provider and destination is approved at once, by the grant.
    covered = await ask(client, 1)
    assert covered["outcome"] == "approved", covered
    assert covered["approval"]["decided_by"] == f"grant:{grant_id}"
    assert service.app is not None
    stored = [event_decoder.decode(e.state) for e in
              service.app.recorder.select_events(UUID(covered["approval"]["id"]))]  # fmt: skip
    assert [(e.event_type, e.actor) for e in stored][-1] == ("approved", f"grant:{grant_id}")
    # Check: another destination or provider, or a ceiling over the grant's, waits for a person.
    for n, change in enumerate([{"destination": "crm:other"}, {"provider": "apollo"},
                                {"max_credits": 5}]):  # fmt: skip
        assert (await ask(client, f"x{n}", **change))["outcome"] == "approval_required", change
    # Check: it is listed, with its use.
    [listed] = await grants(client)
    assert (listed["grant_id"], listed["status"], listed["runs_today"]) == (grant_id, "active", 1)
    assert (listed["granted_by"], listed["destination"]) == ("user:ana", "crm:contacts")


async def test_a_revoked_or_expired_grant_covers_nothing_from_that_moment(
    command_service: Started,
) -> None:
    service, acme = command_service
    client = await workspace(acme, "grants2")
    grant_id = await approve_granting(client, hours=2)
    # Check: past its expiry (the store's own clock passed in) it covers nothing.
    assert service.app is not None
    later = await asyncio.to_thread(
        service.app.handle, "grants2",
        msgspec.convert({**REQUEST, "skill_execution_id": "late"}, commands.Request),
        datetime.now(UTC) + timedelta(hours=2, seconds=1),
    )  # fmt: skip
    assert later.outcome == "approval_required"
    assert (await ask(client, "before"))["outcome"] == "approved"
    # Check: revoked, it covers nothing; a second revoke is a conflict.
    reply = await send(client, "revoke_grant", {"grant_id": grant_id, "by": "user:bo"})
    assert (reply["ok"], reply["outcome"]) == (True, "grant_revoked"), reply
    assert (await ask(client, "after"))["outcome"] == "approval_required"
    assert_error(await send(client, "revoke_grant", {"grant_id": grant_id, "by": "user:bo"}),
                 "conflict")  # fmt: skip
    assert await grants(client) == []
    [ended] = await grants(client, every=True)
    assert (ended["status"], ended["revoked_by"]) == ("revoked", "user:bo")


async def test_a_grant_never_covers_past_the_budget(command_service: Started) -> None:
    _, acme = command_service
    client = await workspace(acme, "grants3", budget=Budget(period="month", cap=10))
    await approve_granting(client, runs=100)  # 4 of 10 committed
    outcomes = [(await ask(client, n))["outcome"] for n in range(3)]
    # Check: one more fits (8 of 10); the next would make 12 and waits for a person.
    assert outcomes == ["approved", "approval_required", "approval_required"]


async def test_a_grant_is_bounded_by_the_workspace_and_refused_with_a_reason(
    command_service: Started,
) -> None:
    _, acme = command_service
    client = await workspace(acme, "grants4", grants=Grants(max_hours=4))
    approval = (await ask(client))["approval"]
    body = {"approval_id": approval["id"], "approver": "user:ana", "digest": approval["digest"]}
    too_long = await send(client, "approve", {**body, "grant": {"hours": 5}})
    assert_error(too_long, "invalid")
    assert too_long["error"]["details"]["field"] == "grant.hours"
    # Check: nothing was stored: the same approval can still be approved.
    assert (await send(client, "approve", body))["outcome"] == "approved"


@pytest.mark.timeout(300)
async def test_a_race_of_100_requests_against_a_grant_of_k_runs_never_passes_k(
    command_service: Started, command_settings: Settings
) -> None:
    _, acme = command_service
    client = await workspace(acme, "grants5")
    k = 7
    await approve_granting(client, runs=k, hours=24)
    # A second writer on the same store, deciding what it receives (not handing it over).
    async with CommandService(msgspec.structs.replace(command_settings, hand_over_commands=False)):
        replies = await asyncio.gather(*(ask(client, f"r{i}") for i in range(100)))
    outcomes = [r["outcome"] for r in replies]
    # Check: exactly K approved at once (nothing else limits them), the rest wait for a person.
    assert outcomes.count("approved") == k, outcomes
    assert outcomes.count("approval_required") == 100 - k
    [listed] = await grants(client)
    assert listed["runs_today"] == k


async def approvals_cli(url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        APPROVALS, "--nats-url", url, "-w", "grants6", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_grants_lists_and_revokes(
    command_service: Started, command_settings: Settings
) -> None:
    _, acme = command_service
    client = await workspace(acme, "grants6")
    approval = (await ask(client))["approval"]
    url = command_settings.nats_url
    # Check: the approve command grants with its --grant-* options.
    code, out, err = await approvals_cli(
        url, "approve", approval["id"], "--approver", "user:ana", "--digest", approval["digest"],
        "--grant-hours", "3", "--grant-max-credits", "6", "--grant-runs", "5",
    )  # fmt: skip
    assert code == 0, (out, err)
    code, out, err = await approvals_cli(url, "grants", "list")
    assert code == 0, (out, err)
    assert approval["id"] in out, out
    assert "active" in out, out
    assert "0/5" in out, out
    code, out, err = await approvals_cli(url, "--json", "grants", "list")
    [listed] = json.loads(out)["grants"]
    assert (listed["max_credits"], listed["runs"]) == (6, 5)
    code, out, err = await approvals_cli(url, "grants", "revoke", approval["id"], "--by",
                                         "user:bo", "--reason", "done")  # fmt: skip
    assert code == 0, (out, err)
    code, out, err = await approvals_cli(url, "--json", "grants", "list")
    assert json.loads(out)["grants"] == []
    assert (await ask(client, "after"))["outcome"] == "approval_required"
