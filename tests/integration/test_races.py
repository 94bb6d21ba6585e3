"""1,000 races on the same request, each between an approval and a rejection, a cancellation or
the expiry, across two command service instances sharing one store (so writers really compete,
on SQLite and PostgreSQL): exactly one outcome, every loser a clear error, a consistent history."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.schemas.codec import event_decoder
from approvals.services.approvals.service import CommandService
from tests.helpers import send
from tests.workspaces import approval_notifications

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

RACES = 1_000
REQUEST: dict[str, Any] = {
    "requested_by": "service:enricher",
    "skill_name": "crm-sync",
    "title": "Sync contacts",
    "summary": "",
    "risk_level": "medium",
    "action": {"kind": "crm_write", "mode": "live"},
}
# What each contender sends, and the outcome it wins with.
RIVALS = {
    "reject": ("reject", lambda a: {"approval_id": a["id"], "approver": "user:bo"}, "rejected"),
    "cancel": ("cancel", lambda a: {"approval_id": a["id"], "by": "service:enricher"}, "cancelled"),
    "expire": ("expire", lambda a: {"approval_id": a["id"]}, "expired"),
}
# A loser learns why: the other side won, the deadline passed, or it came too early.
LOSING_CODES = {"already_decided", "expired", "conflict"}


async def requests(client: ApprovalsClient, count: int, **changes: Any) -> list[dict[str, Any]]:
    replies = await asyncio.gather(
        *(send(client, "request", {**REQUEST, "skill_execution_id": f"r{i}", **changes})
          for i in range(count))
    )  # fmt: skip
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
    return [r["approval"] for r in replies]


@pytest.mark.parametrize("rival", list(RIVALS))
@pytest.mark.timeout(300)
async def test_approve_races_a_rival_and_exactly_one_wins(
    command_service: Started, command_settings: Settings, rival: str
) -> None:
    first, client = command_service
    # A second writer on the same store, deciding what it receives (not handing it over).
    async with CommandService(msgspec.structs.replace(command_settings, hand_over_commands=False)):
        expiring = {"expires_in_s": 3} if rival == "expire" else {}
        approvals = await requests(client, RACES, **expiring)
        verb, body, wins_with = RIVALS[rival]

        async def contest(approval: dict[str, Any]) -> list[dict[str, Any]]:
            if rival == "expire":
                # Fire this pair at its own deadline, give or take half a second, so that the
                # approval and the expiry meet on both sides of it whatever the machine's speed.
                deadline = datetime.fromisoformat(approval["expires_at"]).timestamp()
                await asyncio.sleep(max(0.0, deadline + random.uniform(-0.5, 0.5) - time.time()))
            pair = [
                ("approve", {"approval_id": approval["id"], "approver": "user:ana",
                             "digest": approval["digest"]}),
                (verb, body(approval)),
            ]  # fmt: skip
            random.shuffle(pair)
            return list(await asyncio.gather(*(send(client, v, b) for v, b in pair)))

        contests = [contest(approval) for approval in approvals]
        results = await asyncio.gather(*contests)
    outcomes: Counter[str] = Counter()
    assert first.app is not None
    stored: dict[str, list[Any]] = {}
    for n in approval_notifications(first.app):
        stored.setdefault(str(n.originator_id), []).append(event_decoder.decode(n.state))
    for approval, replies in zip(approvals, results, strict=True):
        winners = [r for r in replies if r["ok"]]
        losers = [r for r in replies if not r["ok"]]
        history = stored[approval["id"]]
        # Check: at most one winner; each loser gets a clear error.
        assert len(winners) <= 1, replies
        for loser in losers:
            assert loser["error"]["code"] in LOSING_CODES, loser
            assert loser["error"]["message"]
        if winners:
            [winner] = winners
            assert winner["outcome"] in {"approved", wins_with}
            # Check: the history is the request and the winner's decision, nothing more.
            assert [e.event_type for e in history] == ["requested", winner["outcome"]]
            assert [e.version for e in history] == [1, 2]
            if losers and losers[0]["error"]["code"] == "already_decided":
                assert losers[0]["error"]["details"]["status"] == winner["outcome"]
            outcomes[winner["outcome"]] += 1
        else:
            # Only near a deadline can both lose (expire came early, approve came late).
            assert rival == "expire", replies
            assert [e.event_type for e in history] == ["requested"]
            outcomes["neither"] += 1
    # Check: the race was real: somewhere each side won (the expiry when the deadline passed).
    assert sum(outcomes.values()) == RACES
    assert outcomes["approved"] > 0, outcomes
    assert outcomes[wins_with] > 0, outcomes
