"""What a person approving from the command line sees: the same review fields as the web detail
page (scope, provider, mode, credit ceiling, preview, destination, proposed payload), and the
budget as it is now beside the picture taken when the request came in. The CLI runs as a process
against the real services on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService
from approvals.schemas import commands
from approvals.schemas.workspace import Budget
from approvals.services.approvals.service import CommandService
from approvals.services.spendcap.service import SpendCapService
from tests.workspaces import ADMIN, SETTINGS, configure_over_nats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from approvals.services.runtime.natsserver import NatsServer
    from approvals.services.runtime.settings import Settings

APPROVALS = str(Path(sys.executable).parent / "approvals")
SCOPED = [
    "--title", "Enrich 2 contacts", "--requested-by", "service:enricher", "--kind", "crm_write",
    "--risk", "low", "--provider", "hubspot", "--destination", "HubSpot list Q4",
    "--max-credits", "100", "--expected-credits", "80", "--table", "contacts",
    "--column", "email", "--workflow", "enrich-q4", "--filters", '{"country": "DE"}',
    "--row-id", "r1", "--row-id", "r2", "--row-count", "2",
    "--preview", '{"sample_in": "ana@example.com", "sample_out": "Ana Example"}',
    "--payload", '{"contacts": ["r1", "r2"]}',
]  # fmt: skip


async def approvals(url: str, *args: str) -> tuple[int, str, str]:
    """``approvals --nats-url URL -w acme ARGS`` as a process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        APPROVALS, "--nats-url", url, "-w", "acme", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def approvals_json(url: str, *args: str) -> Any:
    code, out, err = await approvals(url, "--json", *args)
    assert code == 0, (out, err)
    return json.loads(out)


@pytest.fixture
async def running(settings: Settings, nats_server: NatsServer) -> AsyncIterator[ApprovalsClient]:
    """The command service, the status view and the spend cap, with a budget of 10000 in acme."""
    settings = msgspec.structs.replace(settings, nats_url=nats_server.url)
    async with (
        CommandService(settings),
        ProjectionService(settings),
        SpendCapService(settings),
    ):
        client = await ApprovalsClient.connect(nats_server.url, "acme", reply_timeout=10.0)
        await configure_over_nats(client.nc)
        budgeted = msgspec.structs.replace(SETTINGS, budget=Budget(cap=10000))
        configured = await client.send("configure", commands.Configure(settings=budgeted, by=ADMIN))
        assert configured.ok, configured.error
        yield client
        await client.close()


async def _view(client: ApprovalsClient, approval_id: str, version: int) -> dict[str, Any]:
    """The status view of the approval once it holds ``version``."""
    body = {"approval_id": approval_id, "min_version": version, "timeout_s": 10}
    reply: dict[str, Any] = msgspec.json.decode(await client.query("get", body))
    assert reply["ok"], reply
    assert reply["approval"]["version"] >= version, reply
    return reply["approval"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_an_approver_on_the_command_line_sees_what_they_approve(
    running: ApprovalsClient, nats_server: NatsServer
) -> None:
    url, client = nats_server.url, running
    # Check: a request carries its scope, preview and payload from options alone.
    first = await approvals_json(url, "request", *SCOPED)
    assert first["outcome"] == "approval_required", first
    second = (await approvals_json(url, "request", *SCOPED, "--idempotency-key", "2"))["approval"]
    # Check: the spend cap took its picture of both (0 of 10000 committed), then ana approves the
    # first, which commits its ceiling: the budget now differs from the picture.
    await _view(client, first["approval"]["id"], 2)
    await _view(client, second["id"], 2)
    approved = await client.send("approve", {"approval_id": first["approval"]["id"],
                                             "approver": "user:ana",
                                             "digest": first["approval"]["digest"]})  # fmt: skip
    assert approved.ok, approved.error
    budget = await approvals_json(url, "budget", "show")
    assert budget["budget"]["committed"] == 100

    # Check: `show --json` gives the review fields and the budget as it is now.
    shown = await approvals_json(url, "show", second["id"])
    what = shown["what_to_review"]
    assert what["scope"] == {
        "table": "contacts", "column": "email", "workflow": "enrich-q4",
        "filters": {"country": "DE"}, "row_ids": ["r1", "r2"], "row_count": 2,
    }  # fmt: skip
    assert (what["kind"], what["provider"], what["mode"]) == ("crm_write", "hubspot", "live")
    assert (what["max_credits"], what["expected_credits"]) == (100, 80)
    assert what["preview"] == {"sample_in": "ana@example.com", "sample_out": "Ana Example"}
    assert what["destination"] == "HubSpot list Q4"
    assert what["proposed_payload"] == {"contacts": ["r1", "r2"]}
    assert shown["approval"]["spend"]["committed"] == 0  # the picture at request time
    assert shown["budget_now"]["committed"] == 100

    # Check: the readable `show` prints the same, and says which budget figure is which.
    code, out, err = await approvals(url, "show", second["id"])
    assert code == 0, err
    for expected in ("table contacts", "column email", "workflow enrich-q4", "2 rows", "r1, r2",
                     '"country": "DE"', "crm write · hubspot", "live", "100 credits",
                     "expected 80", '"sample_out": "Ana Example"', "HubSpot list Q4",
                     '"contacts": [', second["digest"]):  # fmt: skip
        assert expected in out, (expected, out)
    at_request = next(line for line in out.splitlines() if "at request" in line)
    assert "0 of 10000 committed" in at_request, out
    now = next(line for line in out.splitlines() if line.lstrip().startswith("budget now"))
    assert "100 of 10000 committed" in now, out

    # Check: `reviews next` hands bo the second request with the same review fields.
    taken = await approvals_json(url, "reviews", "next", "--as", "user:bo")
    assert taken["review"]["id"] == second["id"]
    assert taken["what_to_review"] == what
    code, out, err = await approvals(url, "reviews", "next", "--as", "user:bo")
    assert code == 0, err
    for expected in ("table contacts", "r1, r2", '"sample_in"', "HubSpot list Q4", "100 credits",
                     '"contacts": [', "live"):  # fmt: skip
        assert expected in out, (expected, out)


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_a_workflow_fire_says_what_it_touches(
    running: ApprovalsClient, nats_server: NatsServer
) -> None:
    # Check: a live workflow fire that says it only reads needs no approval...
    url = nats_server.url
    fire = ["--title", "Refresh", "--requested-by", "service:enricher", "--kind", "workflow_fire"]
    reads = await approvals_json(url, "check", *fire, "--touches", "read")
    assert reads["outcome"] == "not_required", reads
    # ...and one that writes to a CRM does, and the reviewer is told so.
    writes = await approvals_json(url, "request", *fire, "--touches", "read",
                                  "--touches", "crm_write")  # fmt: skip
    assert writes["outcome"] == "approval_required", writes
    await _view(running, writes["approval"]["id"], 1)
    shown = await approvals_json(url, "show", writes["approval"]["id"])
    assert shown["what_to_review"]["touches"] == ["read", "crm_write"]


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_an_approver_answers_on_the_command_line_and_wait_exits_as_for_a_rejection(
    running: ApprovalsClient, nats_server: NatsServer
) -> None:
    url = nats_server.url
    asked = (await approvals_json(url, "request", *SCOPED))["approval"]
    # Check: `approvals respond ID --message ... --by user:...` answers instead of deciding.
    answered = await approvals_json(url, "respond", asked["id"], "--message", "Which rows?",
                                    "--by", "user:ana")  # fmt: skip
    assert answered["outcome"] == "responded", answered
    assert (answered["approval"]["status"], answered["approval"]["reason"]) == (
        "responded", "Which rows?",
    )  # fmt: skip
    # Check: `wait` ends on it with the exit of a rejection (1); `list` filters by it.
    code, out, err = await approvals(url, "wait", asked["id"], "--timeout", "20")
    assert code == 1, (out, err)
    listed = await approvals_json(url, "list", "--status", "responded")
    assert [item["id"] for item in listed["items"]] == [asked["id"]]
