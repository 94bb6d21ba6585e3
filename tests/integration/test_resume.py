"""Resume by webhook: a request's ``resume_url`` is POSTed each outcome once, signed per
Standard Webhooks with the workspace's ``[resume]`` secret, over a real nats-server beside the
command service, the status projection and the spend-cap service; the receiver is a local HTTP
server and the signature is checked with the ``standardwebhooks`` library."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService
from approvals.schemas.subjects import STREAM
from approvals.schemas.workspace import Resume
from approvals.services.approvals.service import CommandService
from approvals.services.delivery.service import RECORDS_BUCKET, DeliveryService
from approvals.services.runtime.bus import ensure_kv
from approvals.services.spendcap.service import SpendCapService
from tests.helpers import eventually, send
from tests.integration import test_delivery as base
from tests.integration.test_delivery import ADMIN, SECRET, Hooks, workspace

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from approvals.services.runtime.settings import Settings

# The delivery tests' receiver, SMTP server and settings, as fixtures of this module too.
hooks, mailbox, delivery_settings = base.hooks, base.mailbox, base.delivery_settings
RESUME_SECRET = "whsec_" + "c2VjcmV0LXJlc3VtZS1zZWNyZXQtMTIzNDU2"  # base64 of 27 bytes
Stack = tuple[CommandService, ApprovalsClient]


@pytest.fixture
async def stack(delivery_settings: Settings, hooks: Hooks) -> AsyncIterator[Stack]:
    os.environ["TEST_RESUME_SECRET"] = RESUME_SECRET
    settings = msgspec.structs.replace(workspace(hooks), resume=Resume(secret="TEST_RESUME_SECRET"))
    async with (
        CommandService(delivery_settings) as commands,
        ProjectionService(delivery_settings),
        SpendCapService(delivery_settings),
    ):
        client = await ApprovalsClient.connect(delivery_settings.nats_url, "acme", 10.0)
        assert (await send(client, "configure", {"settings": settings, "by": ADMIN}))["ok"]
        try:
            yield commands, client
        finally:
            await client.close()


def body(n: int, resume_url: str | None, **more: Any) -> dict[str, Any]:
    return {
        "requested_by": "service:agent", "skill_name": "crm-sync", "skill_execution_id": f"r{n}",
        "title": f"Resume #{n}", "summary": "40 contacts to HubSpot", "risk_level": "low",
        "action": {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42"},
        "proposed_payload": {"n": n}, "resume_url": resume_url, **more,
    }  # fmt: skip


async def ask(client: ApprovalsClient, n: int, resume_url: str, **more: Any) -> dict[str, Any]:
    reply = await send(client, "request", body(n, resume_url, **more))
    assert reply["outcome"] == "approval_required", reply
    return reply["approval"]  # type: ignore[no-any-return]


def verified(hooks: Hooks, path: str) -> list[dict[str, Any]]:
    """Every POST to ``path``, each checked with the library against the resume secret."""
    return [Webhook(RESUME_SECRET).verify(raw, headers) for p, headers, raw in hooks.received
            if p == path]  # fmt: skip


async def decide_each_way(client: ApprovalsClient, hooks: Hooks) -> dict[str, dict[str, Any]]:
    """One request per outcome, each ended its own way; the approval by path."""
    asked = {o: await ask(client, i, f"{hooks.url}/resume/{o}")
             for i, o in enumerate(("approved", "rejected", "cancelled", "responded"))}  # fmt: skip
    expiring = await ask(client, 9, f"{hooks.url}/resume/expired", expires_in_s=1)
    a = asked["approved"]
    assert (
        await send(
            client,
            "approve",
            {"approval_id": a["id"], "approver": "user:ana", "digest": a["digest"]},
        )
    )["outcome"] == "approved"
    r = {"approval_id": asked["rejected"]["id"], "approver": "user:ana", "reason": "no",
         "rerun": True}  # fmt: skip
    assert (await send(client, "reject", r))["outcome"] == "rejected"
    c = {"approval_id": asked["cancelled"]["id"], "by": "service:agent"}
    assert (await send(client, "cancel", c))["outcome"] == "cancelled"
    m = {"approval_id": asked["responded"]["id"], "approver": "user:ana", "message": "Which?"}
    assert (await send(client, "respond", m))["outcome"] == "responded"
    deadline = datetime.fromisoformat(expiring["expires_at"])
    await eventually(lambda: datetime.now(UTC) >= deadline)
    expired = await send(client, "expire", {"approval_id": expiring["id"]})
    assert expired["outcome"] == "expired", expired
    return {**asked, "expired": expiring}


async def test_the_resume_url_gets_one_signed_post_per_outcome_even_when_redelivered(
    stack: Stack, delivery_settings: Settings, hooks: Hooks
) -> None:
    _, client = stack
    async with DeliveryService(delivery_settings):
        asked = await decide_each_way(client, hooks)
        await eventually(lambda: all(hooks.on(f"/resume/{o}") for o in asked), within_s=60)
    # Check: each is signed with the resume secret, under a stable id, with the outcome.
    for status, approval in asked.items():
        [told] = verified(hooks, f"/resume/{status}")
        [(headers, _)] = hooks.on(f"/resume/{status}")
        assert headers["webhook-id"] == f"{approval['id']}.resume.{status}"
        assert told["type"] == f"approval.{status}"
        assert (told["data"]["approval_id"], told["data"]["status"]) == (approval["id"], status)
    data = {s: verified(hooks, f"/resume/{s}")[0]["data"] for s in asked}
    assert data["approved"]["approved_digest"] == asked["approved"]["digest"]
    assert data["approved"]["approved_action"]["destination"] == "hubspot:list/42"
    assert data["approved"]["approved_payload"] == {"n": 0}
    assert data["approved"]["decided_by"] == "user:ana"
    assert (data["rejected"]["reason"], data["rejected"]["rerun"]) == ("no", True)
    assert data["responded"]["reason"] == "Which?"
    assert data["rejected"]["approved_digest"] is None
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(*next((raw, h) for p, h, raw in hooks.received
                                     if p == "/resume/approved"))  # fmt: skip
    # Check: every event handed to a new delivery service again (its consumers' positions lost,
    # as after a crash before the acks) sends nothing twice.
    js = client.nc.jetstream()
    for durable in ("delivery", "delivery-outcomes"):
        await js.delete_consumer(STREAM, durable)
    before = len(hooks.received)
    async with DeliveryService(delivery_settings) as again:
        await eventually(lambda: consumed_all(client), within_s=60)
        assert again is not None
    assert len(hooks.received) == before
    assert all(len(hooks.on(f"/resume/{o}")) == 1 for o in asked)


async def consumed_all(client: ApprovalsClient) -> bool:
    js = client.nc.jetstream()
    info = await js.consumer_info(STREAM, "delivery-outcomes")
    last = (await js.stream_info(STREAM)).state.last_seq
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= last


async def test_a_resume_url_refused_as_not_public_is_recorded_as_failed(
    stack: Stack, delivery_settings: Settings, hooks: Hooks
) -> None:
    _, client = stack
    async with DeliveryService(delivery_settings):
        approval = await ask(client, 1, "http://10.0.0.1/resume")
        fine = await ask(client, 2, f"{hooks.url}/resume/fine")
        for a in (approval, fine):
            cancel = {"approval_id": a["id"], "by": "service:agent"}
            assert (await send(client, "cancel", cancel))["outcome"] == "cancelled"
        # Check: the service carries on: the next one is told.
        await eventually(lambda: len(hooks.on("/resume/fine")) == 1, within_s=60)
        records = await ensure_kv(client.nc.jetstream(), RECORDS_BUCKET)
        entry = await records.get(f"{approval['id']}.resume.cancelled")
    # Check: the refusal is recorded with why, after one attempt (retrying cannot help).
    record = msgspec.json.decode(entry.value or b"{}")
    assert "not public" in record["error"]
    assert record["attempts"] == 1


async def test_a_resume_url_without_a_resume_secret_or_not_http_is_invalid(
    stack: Stack, hooks: Hooks
) -> None:
    _, client = stack
    refused = await send(client, "request", body(1, "ftp://example.com/x"))
    assert refused["error"]["code"] == "invalid", refused
    assert "resume_url" in refused["error"]["message"]
    assert (await send(client, "configure", {"settings": workspace(hooks), "by": ADMIN}))["ok"]
    unsigned = await send(client, "request", body(2, "https://example.com/resume"))
    assert unsigned["error"]["code"] == "invalid", unsigned
    assert "[resume]" in unsigned["error"]["message"]
    # Check: nothing is stored: the same request without resume_url is a new approval.
    assert (await send(client, "request", body(2, None)))["outcome"] == "approval_required"
