"""The Python client against every service on a real nats-server and SQLite: the docs' worked
example as written, receipts that verify offline (and tampered ones that do not), and the gate
and decorator resumed from another connection after a person decided."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.client import (
    ApprovalDenied,
    ApprovalPending,
    ApprovalResponded,
    ApprovalsClient,
    ApprovalsError,
    require_approval,
    verify_receipt,
)
from approvals.projections.status.service import ProjectionService
from approvals.schemas.signatures import ReceiptInvalid
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.service import CommandService
from approvals.services.dev import bootstrap_workspace
from approvals.services.runtime.settings import Settings
from approvals.services.spendcap.service import SpendCapService
from tests.examples import example
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from approvals.services.runtime.natsserver import NatsServer

APPROVALS = str(Path(sys.executable).parent / "approvals")
AGENT = "service:agent"
LIVE = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 40}
ASK = {"requested_by": AGENT, "skill_name": "enrich-leads", "skill_execution_id": "t-1",
       "title": "Enrich", "summary": "", "risk_level": "medium"}  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, nats_server: NatsServer, *services: type[Any]
) -> AsyncIterator[ApprovalsClient]:
    """The command and projection services (and ``services``, each built from the same
    settings) on the example workspace ``default``, and a client of theirs."""
    settings = Settings(
        nats_url=nats_server.url,
        sqlite_path=tmp_path / "approvals.db",
        view_sqlite_path=tmp_path / "status.db",
        signing_key_path=tmp_path / "signing-key.pem",
    )
    Signer.from_file(tmp_path / "signing-key.pem", create=True)
    await asyncio.to_thread(bootstrap_workspace, settings)
    async with contextlib.AsyncExitStack() as running:
        for service in (CommandService, ProjectionService, *services):
            await running.enter_async_context(service(settings))
        client = await ApprovalsClient.connect(nats_server.url, "default", reply_timeout=10.0)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
async def stack(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[ApprovalsClient]:
    """Commands, projection and spend-cap services on the example workspace ``default``."""
    async with serving(tmp_path, nats_server, SpendCapService) as client:
        yield client


async def approve_pending(client: ApprovalsClient, approver: str = "user:ana") -> int:
    """A person: approve every pending request of the workspace; how many."""
    page = msgspec.json.decode(await client.query("list", {"status": "pending"}))
    for item in page["items"]:
        reply = await send(client, "approve", {"approval_id": item["id"], "approver": approver,
                                               "digest": item["digest"]})  # fmt: skip
        assert reply["ok"] or reply["error"]["code"] == "already_decided", reply
    return len(page["items"])


async def approve_what_waits(client: ApprovalsClient) -> None:
    """A person: wait until a request is in the inbox (the view), approve what is there."""

    async def approved_some() -> bool:
        return await approve_pending(client) > 0

    await eventually(approved_some)


@pytest.mark.timeout(120)
async def test_the_docs_client_example_runs_as_written(stack: ApprovalsClient) -> None:
    env = {**os.environ, "NATS_URL": stack.nc.connected_url.geturl()}  # type: ignore[union-attr]
    running = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example("client"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    approved = 0
    while running.returncode is None and approved < 2:
        approved += await approve_pending(stack)
        await asyncio.sleep(0.05)  # a person's polling interval, not a wait for a condition
    out, err = await asyncio.wait_for(running.communicate(), timeout=60)
    assert running.returncode == 0, (out.decode(), err.decode())
    lines = out.decode().splitlines()
    assert lines[0].startswith("approval_required http")
    assert lines[1:] == [
        "approved by user:ana ceiling 10.0",
        "reported 5.0 credits",
        "gated run used 5.0 credits",
    ]
    # Check: both runs are in the view as redeemed, with what they used against the ceiling.
    page = msgspec.json.decode(await stack.query("list", {"skill_name": "enrich-leads"}))
    assert {(i["status"], i["credits_used"], i["max_credits"]) for i in page["items"]} == {
        ("approved", 5.0, 10.0)
    }
    assert len(page["items"]) == 2
    assert all(i["redeemed_at"] and i["receipt"] for i in page["items"])


async def test_a_receipt_verifies_offline_and_any_change_breaks_it(
    stack: ApprovalsClient, tmp_path: Path
) -> None:
    asked = await stack.request(**ASK, action=LIVE, proposed_payload={"rows": [1]})
    assert asked.approval is not None
    await approve_what_waits(stack)
    approval = await stack.wait(asked.approval.id, timeout_s=10)
    assert approval.receipt is not None
    keys = list(await stack.keys())
    body = verify_receipt(approval.receipt, keys)
    assert (body.approval_id, body.digest, body.max_credits, body.approvers) == (
        approval.id, approval.digest, 40, ("user:ana",),
    )  # fmt: skip
    assert (body.workspace_id, body.redeem_by, body.expires_at) == (
        "default", approval.redeem_by, approval.expires_at,
    )  # fmt: skip
    # Check: every signed fact is covered; a changed one, a changed signature or another key fails.
    genuine = msgspec.to_builtins(approval.receipt)
    for field, forged in (
        ("max_credits", 400.0), ("approvers", ["user:bob"]), ("digest", "0" * 64),
        ("workspace_id", "other"), ("redeem_by", "2099-01-01T00:00:00Z"),
        ("signature", genuine["signature"][:-4] + "AAAA"),
    ):  # fmt: skip
        with pytest.raises(ReceiptInvalid):
            verify_receipt({**genuine, field: forged}, keys)
    with pytest.raises(ReceiptInvalid, match="not known"):
        verify_receipt(genuine, [Signer.generate().public_key()])
    impostor = msgspec.structs.replace(Signer.generate().public_key(), key_id=keys[0].key_id)
    with pytest.raises(ReceiptInvalid, match="does not match"):
        verify_receipt(genuine, [impostor])

    # Check: the CLI verifies a receipt offline from a file, and refuses a tampered one.
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"ok": True, "keys": [msgspec.to_builtins(keys[0])]}))
    good, bad = tmp_path / "receipt.json", tmp_path / "tampered.json"
    good.write_text(json.dumps(genuine))
    bad.write_text(json.dumps({**genuine, "max_credits": 41.0}))
    ok = await cli("--json", "verify", str(good), "--keys", str(keys_file))
    assert ok[0] == 0, ok
    assert json.loads(ok[1])["receipt"]["approvers"] == ["user:ana"]
    refused = await cli("--json", "verify", str(bad), "--public-key", keys[0].public_key)
    assert refused[0] == 1
    assert json.loads(refused[1])["error"]["code"] == "receipt_invalid"
    # Check: online, a reply that carries the receipt verifies against the service's keys.
    url = stack.nc.connected_url.geturl()  # type: ignore[union-attr]
    shown = await cli("--nats-url", url, "-w", "default", "--json", "show", str(approval.id))
    (tmp_path / "shown.json").write_text(shown[1])
    online = await cli("--nats-url", url, "verify", str(tmp_path / "shown.json"))
    assert online[0] == 0, online
    assert "signed by key" in online[1]
    listed = await cli("--nats-url", url, "--json", "keys")
    assert json.loads(listed[1])["keys"][0]["key_id"] == keys[0].key_id


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        APPROVALS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_gate_is_resumed_by_another_connection_after_a_person_decides(
    stack: ApprovalsClient,
) -> None:
    ran: list[str] = []
    flow: dict[str, Any] = {**ASK, "skill_execution_id": "resume", "action": LIVE,
                            "payload": {"rows": [7]}}  # fmt: skip
    # Check: nobody decided in time: the body does not run, and the id is handed back.
    with pytest.raises(ApprovalPending) as pending:
        async with stack.gate(**flow, wait_s=0.3):
            ran.append("too early")
    assert ran == []
    assert pending.value.web_url.endswith(pending.value.approval_id)
    await approve_what_waits(stack)
    # Check: another connection (another process, as far as the service knows) resumes it.
    url = stack.nc.connected_url.geturl()  # type: ignore[union-attr]
    async with await ApprovalsClient.connect(url, "default", reply_timeout=10.0) as later:
        async with later.gate(**flow, wait_s=10) as run:
            assert run.approval is not None
            assert str(run.approval.id) == pending.value.approval_id
            ran.append("ran")
            run.credits_used = 12.0
        # Check: it ran once; the approval is spent.
        with pytest.raises(ApprovalsError) as again:
            async with later.gate(**flow, wait_s=10):
                ran.append("twice")
        assert again.value.code == "already_redeemed"
    assert ran == ["ran"]

    async def reported() -> bool:
        return (await stack.get(pending.value.approval_id)).credits_used == 12.0

    await eventually(reported)
    # Check: a failing body is reported as failed, and the error goes on up.
    failing = {**flow, "skill_execution_id": "fails"}
    with pytest.raises(ApprovalPending) as second:
        async with stack.gate(**failing, wait_s=0.1):
            pass
    await approve_what_waits(stack)
    with pytest.raises(RuntimeError, match="provider down"):
        async with stack.gate(**failing, approval_id=second.value.approval_id, wait_s=10):
            raise RuntimeError("provider down")
    timeline: list[Any] = []

    async def reported_failed() -> bool:
        query = {"approval_id": second.value.approval_id}
        timeline[:] = msgspec.json.decode(await stack.query("history", query))["timeline"]
        return bool(timeline[-1]["type"] == "run_reported")

    await eventually(reported_failed)
    last = timeline[-1]["event"]
    assert last["outcome"] == "failed"
    assert "provider down" in last["summary"]


async def test_the_gate_runs_freely_without_approval_and_never_after_a_rejection(
    stack: ApprovalsClient,
) -> None:
    read = {**ASK, "action": {"kind": "read", "mode": "live"}, "payload": None}
    async with stack.gate(**read) as run:
        assert run.approval is None  # nothing needed, nothing stored or reported
    flow = {**ASK, "skill_execution_id": "no", "action": LIVE, "payload": {"rows": [1]},
            "idempotency_key": "enrich:no"}  # fmt: skip
    with pytest.raises(ApprovalPending) as pending:
        async with stack.gate(**flow, wait_s=0.1):
            pass
    await send(stack, "reject", {"approval_id": pending.value.approval_id,
                                 "approver": "user:ana", "reason": "not this week",
                                 "rerun": True})  # fmt: skip
    with pytest.raises(ApprovalDenied, match="not this week") as denied:
        async with stack.gate(**flow, wait_s=5):
            pytest.fail("a rejected action ran")
    # Check: the caller learns why, and that the person asks it to prepare a new request.
    assert (denied.value.reason, denied.value.rerun) == ("not this week", True)
    approval = await stack.get(pending.value.approval_id)
    assert (approval.status, approval.reason, approval.rerun) == ("rejected", "not this week", True)
    # Check: asking again with the same request replays the rejection, rerun and all.
    again = await stack.request(**{**ASK, "skill_execution_id": "no"}, action=LIVE,
                                proposed_payload={"rows": [1]},
                                idempotency_key="enrich:no")  # fmt: skip
    assert again.approval is not None
    assert (again.replayed, again.approval.reason, again.approval.rerun) == (
        True, "not this week", True,
    )  # fmt: skip


async def test_the_gate_never_runs_an_answered_request_and_raises_the_answer(
    stack: ApprovalsClient,
) -> None:
    flow = {**ASK, "skill_execution_id": "answered", "action": LIVE, "payload": {"rows": [2]},
            "idempotency_key": "enrich:answered"}  # fmt: skip
    with pytest.raises(ApprovalPending) as pending:
        async with stack.gate(**flow, wait_s=0.1):
            pass
    await send(
        stack,
        "respond",
        {
            "approval_id": pending.value.approval_id,
            "approver": "user:ana",
            "message": "Which rows, and why?",
        },
    )
    # Check: the denial is an answer, carrying the message; code catching ApprovalDenied
    # today catches it too.
    with pytest.raises(ApprovalResponded, match="Which rows, and why") as answered:
        async with stack.gate(**flow, wait_s=5):
            pytest.fail("an answered action ran")
    assert isinstance(answered.value, ApprovalDenied)
    assert (answered.value.message, answered.value.reason) == ("Which rows, and why?",) * 2
    assert answered.value.approval.status == "responded"


async def test_the_decorator_gates_a_call_and_resumes_the_same_call(
    stack: ApprovalsClient,
) -> None:
    calls: list[tuple[str, int]] = []

    @require_approval(stack, action={"kind": "crm_write", "mode": "live",
                                     "destination": "hubspot"},
                      requested_by=AGENT, skill_name="sync-contacts",
                      title="Sync contacts", wait_s=0.2)  # fmt: skip
    async def sync(list_name: str, count: int) -> str:
        calls.append((list_name, count))
        return f"synced {count}"

    with pytest.raises(ApprovalPending):
        await sync("vip", 40)
    assert calls == []
    await approve_what_waits(stack)
    assert await sync("vip", 40) == "synced 40"
    # Check: other arguments are another action, which needs its own approval.
    with pytest.raises(ApprovalPending):
        await sync("vip", 41)
    assert calls == [("vip", 40)]
