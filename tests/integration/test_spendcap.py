"""The spend-cap service over a real nats-server, beside the command service on each store:
budget pictures and impossible requests, released reservations, alerts, and a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import pytest

from approvals.schemas.codec import event_decoder
from approvals.schemas.events import CreditsReleased, SpendChecked
from approvals.schemas.workspace import Budget
from approvals.services.spendcap.service import DEADLINES, SpendCap, crossed
from tests.helpers import eventually, send
from tests.integration.test_spend import REQUEST, SPEND, approve, ask, redeem, workspace

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from approvals.client import ApprovalsClient
    from approvals.services.approvals.service import CommandService
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]


@pytest.fixture
async def spendcap(command_service: Started) -> AsyncIterator[SpendCap]:
    _, client = command_service
    service = SpendCap(client.nc, ack_wait_s=2.0)
    await service.start()
    yield service
    await service.stop()


def stored(service: CommandService, kind: type[Any]) -> list[Any]:
    assert service.app is not None
    found = (event_decoder.decode(n.state) for n in service.app.notifications(1, 1_000_000))
    return [e for e in found if isinstance(e, kind)]


def approval(service: CommandService, approval_id: str) -> Any:
    assert service.app is not None
    return service.app.get(UUID(approval_id))


async def test_a_request_gets_its_budget_picture(
    command_service: Started, spendcap: SpendCap
) -> None:
    service, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    held = await ask(client, skill_execution_id="held")
    await eventually(lambda: approval(service, held["id"]).spend is not None)
    await send(client, "approve", approve(held))  # 30 of 1,000 committed
    fits = await ask(client, skill_execution_id="fits")
    capped = await workspace(acme, "capped", msgspec.structs.replace(
        SPEND, budget=Budget(period="week", cap=40)))  # fmt: skip
    short = await ask(capped, action={**REQUEST["action"], "max_credits": 40})

    await eventually(lambda: approval(service, fits["id"]).spend is not None)
    checked = approval(service, fits["id"]).spend
    picture = checked.spend
    # Check: the reviewer sees the cap, what is committed, what remains and this ceiling.
    assert (picture.cap, picture.max_per_run, picture.committed, picture.remaining) == (
        1000, 50, 30, 970,
    )  # fmt: skip
    assert (picture.ceiling, picture.fits, checked.actor) == (30, True, "service:spendcap")
    await eventually(lambda: approval(service, short["id"]).spend is not None)
    assert approval(service, short["id"]).status == "pending"  # 40 fits a cap of 40
    # Check: once each, whatever the redeliveries.
    checked = Counter(str(e.approval_id) for e in stored(service, SpendChecked))
    assert checked == {held["id"]: 1, fits["id"]: 1, short["id"]: 1}


async def test_a_request_the_limits_no_longer_allow_is_rejected_with_why(
    command_service: Started,
) -> None:
    service, acme = command_service
    loose = msgspec.structs.replace(SPEND, budget=Budget(period="week", cap=1000, max_per_run=100))
    client = await workspace(acme, "spend", loose)
    too_big = await ask(client, action={**REQUEST["action"], "max_credits": 60})
    over_cap = await ask(client, action={**REQUEST["action"], "max_credits": 45})
    # Check: limits lowered after the requests came in (the command service admitted them under
    # the old ones) are the spend-cap service's to enforce: it sees the limits when it checks.
    await workspace(acme, "spend", msgspec.structs.replace(
        SPEND, budget=Budget(period="week", cap=40, max_per_run=50)))  # fmt: skip
    checker = SpendCap(acme.nc, ack_wait_s=2.0)
    await checker.start()
    try:
        for impossible, why in ((too_big, "per-run maximum 50"), (over_cap, "weekly cap 40")):
            await eventually(lambda a=impossible: approval(service, a["id"]).status == "rejected")
            rejected = approval(service, impossible["id"])
            assert rejected.decided_by == "service:spendcap"
            assert why in (rejected.reason or "")
    finally:
        await checker.stop()


async def test_an_approval_not_redeemed_by_its_deadline_gives_its_credits_back(
    command_service: Started, spendcap: SpendCap
) -> None:
    service, acme = command_service
    client = await workspace(acme, "quick", msgspec.structs.replace(SPEND, redeem_within_s=1))
    lapsed = await ask(client, skill_execution_id="lapsed")
    used = await ask(client, skill_execution_id="used")
    for one in (lapsed, used):
        assert (await send(client, "approve", approve(one)))["outcome"] == "approved"
    assert (await send(client, "redeem", redeem(used)))["outcome"] == "redeemed"

    async def committed() -> float:
        return float(msgspec.json.decode(await client.query("budget", {}))["budget"]["committed"])

    assert await committed() == 60
    await eventually(lambda: len(stored(service, CreditsReleased)) == 1)
    [released] = stored(service, CreditsReleased)
    assert (str(released.approval_id), released.credits, released.committed) == (
        lapsed["id"], 30, 30,
    )  # fmt: skip
    # Check: the redeemed one keeps its reservation once its own deadline is handled.
    js = client.nc.jetstream()

    async def deadlines_done() -> bool:
        info = await js.consumer_info("APPROVALS_EVENTS", DEADLINES)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(deadlines_done)
    assert await committed() == 30
    assert len(stored(service, CreditsReleased)) == 1
    # Check: the lapsed approval cannot run any more.
    assert (await send(client, "redeem", redeem(lapsed)))["error"]["code"] == "expired"


async def test_alerts_at_80_and_100_percent_of_the_cap(
    command_service: Started, spendcap: SpendCap
) -> None:
    _, acme = command_service
    client = await workspace(acme, "alerting", msgspec.structs.replace(
        SPEND, budget=Budget(period="month", cap=100)))  # fmt: skip
    alerts: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        alerts.append(msgspec.json.decode(msg.data))

    subscription = await client.nc.subscribe("approvals.alerts.alerting.budget", cb=collect)
    try:
        for credits in (50, 29, 21):  # 50%, 79%, 100%
            asked = await ask(client, action={**REQUEST["action"], "max_credits": credits})
            assert (await send(client, "approve", approve(asked)))["ok"]
        await eventually(lambda: len(alerts) >= 1 and alerts[-1]["threshold"] == 100)
    finally:
        await subscription.unsubscribe()
    # Check: 79% crosses nothing; the last reservation crosses both 80% and 100% at once.
    assert [(a["threshold"], a["committed"], a["remaining"]) for a in alerts] == [
        (80, 100, 0), (100, 100, 0),
    ]  # fmt: skip
    assert alerts[0]["percent_used"] == 100
    assert alerts[0]["cause"] == "credits_reserved"


def test_thresholds_are_crossed_only_on_the_way_up() -> None:
    assert crossed(0, 79.9, 100) == []
    assert crossed(79.9, 80, 100) == [80]
    assert crossed(50, 120, 100) == [80, 100]
    assert crossed(100, 50, 100) == []  # a release or a cheap run: no alert
    assert crossed(85, 90, 100) == []  # already past 80


@pytest.mark.timeout(180)
async def test_a_killed_spendcap_service_leaves_no_request_unchecked_or_checked_twice(
    command_service: Started, command_settings: Settings
) -> None:
    service, acme = command_service
    client = await workspace(acme, "spend", SPEND)
    env = {**os.environ, "NATS_URL": command_settings.nats_url, "APPROVALS_ACK_WAIT_S": "2"}
    approvals = os.path.join(os.path.dirname(sys.executable), "approvals")
    command = [approvals, "serve", "--only", "spendcap"]
    first = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        asked = await asyncio.gather(*(ask(client, skill_execution_id=f"k{i}") for i in range(200)))
        await eventually(lambda: len(stored(service, SpendChecked)) >= 20, within_s=60)
    finally:
        first.send_signal(signal.SIGKILL)  # mid-stream: checks in flight, acks not sent
        await first.wait()
    second = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        await eventually(lambda: len(stored(service, SpendChecked)) >= 200, within_s=90)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    checked = Counter(str(e.approval_id) for e in stored(service, SpendChecked))
    assert set(checked) == {a["id"] for a in asked}
    assert set(checked.values()) == {1}


async def test_a_restarted_service_brings_its_consumers_to_the_new_configuration(
    command_service: Started, spendcap: SpendCap
) -> None:
    _, client = command_service
    js = client.nc.jetstream()
    assert (await js.consumer_info("APPROVALS_EVENTS", DEADLINES)).config.ack_wait == 2.0
    again = SpendCap(client.nc, ack_wait_s=5.0)
    await again.start()
    try:
        info = await js.consumer_info("APPROVALS_EVENTS", DEADLINES)
        assert (info.config.ack_wait, info.config.filter_subjects) == (
            5.0, ["approvals.events.*.*.approved"],
        )  # fmt: skip
    finally:
        await again.stop()
