"""The approval metrics on ``/metrics`` of ``approvals serve``, after real requests and
decisions: names and labels as docs/observability.md lists them (ops.families is the list)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from approvals.projections.status.service import pending_gauges
from approvals.schemas import commands
from approvals.schemas.codec import encoder
from approvals.schemas.workspace import Budget
from approvals.services.runtime import ops
from tests.helpers import eventually
from tests.integration.test_commands import REQUEST, approve_body
from tests.integration.test_ops import Served, sample, served
from tests.integration.test_status_view import a_request, app, stored, view
from tests.workspaces import ADMIN, SETTINGS

if TYPE_CHECKING:
    from approvals.projections.status.view import StatusView
    from approvals.services.approvals.application import Approvals

__all__ = ["app", "served", "view"]

APPROVAL_METRICS = (
    "approvals_decision_seconds", "approvals_pending", "approvals_oldest_pending_seconds",
    "approvals_expiries", "approvals_reminders", "approvals_escalations", "approvals_deliveries",
    "approvals_redemptions", "approvals_credits_reserved", "approvals_credits_used",
    "approvals_budget_cap_credits", "approvals_budget_committed_credits",
)  # fmt: skip


def test_the_view_tells_what_waits_per_workspace_and_since_when(
    app: Approvals, view: StatusView
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    app.handle("acme", a_request("first"), now=now)
    app.handle("acme", a_request("second", skill_execution_id="e2"), now=now + timedelta(0, 30))
    decided = app.handle("globex", a_request("third"), now=now)
    assert decided.approval is not None
    app.handle("globex", commands.Reject(approval_id=decided.approval.id, approver="user:bo"),
               now=now)  # fmt: skip
    view.project(stored(app))
    # Check: two wait in acme, the oldest since the first request; none in globex.
    assert view.pending() == {"acme": (2, now)}
    # Check: a workspace whose approvals were all decided reads 0, not its last value.
    seen = {"globex"}
    pending_gauges(view.pending(), seen)
    assert ops.PENDING.labels("globex")._value.get() == 0
    assert ops.PENDING.labels("acme")._value.get() == 2
    assert ops.OLDEST_PENDING.labels("acme")._value.get() > 0
    assert seen == {"acme", "globex"}


@pytest.mark.slow
async def test_requests_and_decisions_show_in_the_approval_metrics(
    served: Served, nats_server: Any
) -> None:
    await eventually(lambda: served.answers("/readyz", 200), within_s=60)
    nc = await nats.connect(nats_server.url)

    async def send(verb: str, body: Any) -> dict[str, Any]:
        reply = await nc.request(f"approvals.cmd.acme.{verb}", encoder.encode(body), 10)
        answer: dict[str, Any] = json.loads(reply.data)
        assert answer["ok"], answer
        return answer

    try:
        settings = msgspec.structs.replace(SETTINGS, budget=Budget(cap=1000))
        await send("configure", commands.Configure(settings=settings, by=ADMIN))
        # Check: one approved, redeemed and reported; one rejected; one left waiting.
        done = (await send("request", {**REQUEST, "skill_execution_id": "m1"}))["approval"]
        await send("approve", approve_body(done))
        await send("redeem", {"approval_id": done["id"], "digest": done["digest"],
                              "executor": REQUEST["requested_by"]})  # fmt: skip
        await send("report", {"approval_id": done["id"], "credits_used": 4,
                              "outcome": "succeeded", "by": REQUEST["requested_by"]})  # fmt: skip
        refused = (await send("request", {**REQUEST, "skill_execution_id": "m2"}))["approval"]
        await send("reject", {"approval_id": refused["id"], "approver": "user:bo"})
        await send("request", {**REQUEST, "skill_execution_id": "m3"})
    finally:
        await nc.close()

    def counted() -> bool:
        metrics = served.metrics()
        return (
            sample(metrics, "approvals_pending", workspace="acme") == 1
            and sample(metrics, "approvals_oldest_pending_seconds", workspace="acme") > 0
            and sample(metrics, "approvals_budget_cap_credits", workspace="acme") == 1000
        )

    await eventually(counted, within_s=30)
    metrics = served.metrics()
    decided = {"workspace": "acme", "risk": "high"}
    assert sample(metrics, "approvals_decision_seconds_count", **decided, outcome="approved") == 1
    assert sample(metrics, "approvals_decision_seconds_count", **decided, outcome="rejected") == 1
    assert sample(metrics, "approvals_redemptions_total", workspace="acme", outcome="redeemed") == 1
    assert sample(metrics, "approvals_credits_reserved_total", workspace="acme") == 40
    assert sample(metrics, "approvals_credits_used_total", workspace="acme") == 4
    assert sample(metrics, "approvals_budget_committed_credits", workspace="acme") >= 0

    # Check: every approval metric is on /metrics, each sample with the labels its family lists.
    exported = {f.name: f for f in text_string_to_metric_families(served.get("/metrics").text)}
    families = ops.families()
    for name in APPROVAL_METRICS:
        assert name in exported, name
        for found in exported[name].samples:
            assert set(found.labels) - {"le"} == set(families[name][1]), (name, found.labels)
