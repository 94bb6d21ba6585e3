"""Writers contending for one aggregate (the spend cap's budget), on SQLite and PostgreSQL: a
command that keeps losing gets a reply of its own and never fails the others, and rounds of 60
approvals racing across two command service processes get only decisions or domain refusals,
each matching what the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import pytest

from approvals.schemas import commands, events
from approvals.schemas.workspace import Budget, WorkspaceSettings
from approvals.services.approvals import budget
from approvals.services.approvals.application import Result
from approvals.services.approvals.errors import Conflict
from approvals.services.runtime.natsserver import free_port
from tests.helpers import eventually, send
from tests.integration.test_spend import REQUEST, SPEND, approve, workspace
from tests.integration.test_store import a_request, an_approve, open_app, requested
from tests.workspaces import ADMIN, SETTINGS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from approvals.client import ApprovalsClient
    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.service import CommandService
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

__all__ = ["open_app"]  # the fixture, shared with test_store

ROUNDS = int(os.environ.get("APPROVALS_TEST_RACE_ROUNDS", "20"))  # more for a soak run
APPROVALS = 60
CEILING = 30
CAP = 1200  # 40 of the 60 ceilings fit
APPROVERS = ("user:ana", "user:bo")


def test_a_command_that_keeps_losing_gets_its_own_conflict_and_the_others_are_stored(
    open_app: Callable[[], Approvals], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, rival = open_app(), open_app()
    capped = WorkspaceSettings(
        members=SETTINGS.members, budget=Budget(period="month", cap=10_000, max_per_run=50)
    )
    app.handle("capped", commands.Configure(settings=capped, by=ADMIN))
    first, starved, last, *spare = (
        requested(app.handle("capped", a_request(skill_execution_id=f"e{i}"))) for i in range(40)
    )
    put = app._put

    def rival_wins_first(new_events: list[Any], state: Any) -> Any:
        # Another instance reserves against the same budget between every read and write of
        # the starved approval: its save always meets a newer budget version.
        if any(isinstance(e, events.Approved) and e.approval_id == starved.id for e in new_events):
            assert rival.handle("capped", an_approve(spare.pop())).outcome == "approved"
        return put(new_events, state)

    monkeypatch.setattr(app, "_put", rival_wins_first)
    handled = app.handle_batch([("capped", an_approve(a)) for a in (first, starved, last)])
    # Check: the starved command gets a conflict of its own, and nothing of it is stored.
    ok_first, lost, ok_last = handled.results
    assert isinstance(lost, Conflict), lost
    assert (lost.code, lost.details["rule"]) == ("conflict", "concurrent_writes")
    assert app.get(starved.id).status == "pending"
    # Check: the other two are approved, stored, and their replies say so.
    for result, approval in ((ok_first, first), (ok_last, last)):
        assert isinstance(result, Result), result
        assert result.approval is not None
        assert (result.outcome, result.approval.version) == ("approved", 2)
        assert app.get(approval.id) == result.approval
    held = app.budget_in("capped", budget.period_of("month", datetime.now(UTC)))
    assert held is not None
    assert {first.id, last.id} <= set(held.reservations)
    assert starved.id not in held.reservations
    assert handled.last_notification_id == app.last_notification_id()


async def race_round(client: ApprovalsClient) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """60 requests, then all 60 approved at once; each approval with the reply it got."""
    asked = await asyncio.gather(
        *(send(client, "request", {**REQUEST, "skill_execution_id": f"e{i}"})
          for i in range(APPROVALS))
    )  # fmt: skip
    assert all(r["ok"] and r["outcome"] == "approval_required" for r in asked), asked[:3]
    approvals = [r["approval"] for r in asked]
    replies = await asyncio.gather(
        *(send(client, "approve", approve(a, APPROVERS[i % 2])) for i, a in enumerate(approvals))
    )
    return list(zip(approvals, replies, strict=True))


def check_against_store(
    app: Approvals, workspace_id: str, raced: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Every reply matches the store: approved and holding credits, or refused and untouched."""
    held = app.budget_in(workspace_id, budget.period_of("month", datetime.now(UTC)))
    assert held is not None
    granted = 0
    for approval, reply in raced:
        stored = app.get(UUID(approval["id"]), workspace_id)
        if reply["ok"]:
            assert reply["outcome"] == "approved", reply
            assert (stored.status, stored.version) == ("approved", reply["approval"]["version"])
            assert held.reservations.get(stored.id) == CEILING
            granted += 1
        else:
            # Check: a refusal is the domain's, and nothing of the refused command is stored.
            assert reply["error"]["code"] == "spend_cap_exceeded", reply
            assert (stored.status, stored.version) == ("pending", 1), reply
            assert stored.id not in held.reservations
    # Check: the cap is filled exactly and never passed.
    assert granted == CAP // CEILING
    assert held.committed == granted * CEILING
    assert len(held.reservations) == granted


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_60_approvals_race_for_the_cap_across_two_instances_round_after_round(
    command_service: Started, command_settings: Settings, tmp_path: Path
) -> None:
    first, acme = command_service
    assert first.app is not None
    capped = WorkspaceSettings(
        members=SPEND.members, budget=Budget(period="month", cap=CAP, max_per_run=CEILING)
    )
    checked = 0
    async with other_process(command_settings, tmp_path / "second.log"):
        for round_ in range(ROUNDS):
            client = await workspace(acme, f"race{round_}", capped)
            raced = await race_round(client)
            check_against_store(first.app, f"race{round_}", raced)
            checked += len(raced)
    assert checked == ROUNDS * APPROVALS
    print(f"{ROUNDS} rounds, {checked} replies checked against the store")


@contextlib.asynccontextmanager
async def other_process(settings: Settings, log: Path) -> AsyncIterator[None]:
    """A second command service as an ``approvals serve`` process on the same store and bus:
    its reads and saves really interleave with this process's (two instances on one event loop
    never do, each flush runs to its end)."""
    ops = free_port()
    env = {
        **os.environ,
        "NATS_URL": settings.nats_url,
        "APPROVALS_OPS_PORT": str(ops),
        "APPROVALS_STORE": settings.store,
        "APPROVALS_SQLITE_PATH": str(settings.sqlite_path),
        "APPROVALS_POSTGRES_DSN": settings.postgres_dsn or "",
        "APPROVALS_POSTGRES_SCHEMA": settings.postgres_schema or "",
        "APPROVALS_HAND_OVER_COMMANDS": "false",  # it decides what it receives: writers compete
    }
    approvals = str(Path(sys.executable).parent / "approvals")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            approvals, "serve", "--only", "commands", env=env, stdout=out, stderr=out
        )

    def ready() -> bool:
        assert process.returncode is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{ops}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    try:
        await eventually(ready, within_s=60)
        yield
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
