"""The stack the agent-framework integrations are tested on (the command service and the
projection on a real nats-server and SQLite, the example workspace) and what a test does on it:
wait for a request to show, decide it as a person, run a docs page's example as a process."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import pytest

from approvals.client import ApprovalsClient
from approvals.schemas.codec import reply_error
from tests.e2e.test_client import serving
from tests.examples import example
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from approvals.schemas.queries import ApprovalView
    from approvals.services.runtime.natsserver import NatsServer


# A person's rejection or answer, and what the model then says (the stand-in models repeat the
# tool's message after "Done: ").
DENIALS = [
    ("reject", {"reason": "Not this week: the budget is spent."},
     "Done: Not this week: the budget is spent."),
    ("respond", {"message": "Use the free tier first, then ask again."},
     "Done: Use the free tier first, then ask again."),
]  # fmt: skip

# The other endings, as a person or the requester gives them, and what the workflow or graph in
# the LangGraph and Temporal tests then reports ("<status>: <reason> rerun=<rerun>").
NOT_APPROVED = [
    ("reject", {"reason": "not this week", "rerun": True}, "rejected: not this week rerun=True"),
    ("respond", {"message": "Which rows, and why?"}, "responded: Which rows, and why? rerun=False"),
    ("cancel", {"by": "service:agent", "reason": "withdrawn"}, "cancelled: withdrawn rerun=False"),
]  # fmt: skip


@pytest.fixture
async def stack(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[ApprovalsClient]:
    """Commands and projection services on the example workspace ``default``."""
    async with serving(tmp_path, nats_server) as client:
        yield client


async def shown(client: ApprovalsClient, approval_id: str) -> ApprovalView:
    """The approval once the projection shows it (a person sees it in the inbox)."""
    seen: list[ApprovalView] = []

    async def visible() -> bool:
        if reply_error(await client.query("get", {"approval_id": approval_id})):
            return False
        seen.append(await client.get(approval_id))
        return True

    await eventually(visible)
    return seen[-1]


async def decide(client: ApprovalsClient, approval_id: str, verb: str, **body: Any) -> None:
    """A person decides through the command service."""
    approval = await shown(client, approval_id)
    reply = await send(client, verb, {"approval_id": approval_id, "approver": "user:ana",
                                      "digest": approval.digest, **body})  # fmt: skip
    assert reply["ok"], reply
    await decided_in_view(client, approval_id)


async def decided_in_view(client: ApprovalsClient, approval_id: str) -> None:
    """Wait until the projection shows the decision (``results`` reads the view)."""

    async def decided() -> bool:
        return (await client.get(approval_id)).status != "pending"

    await eventually(decided)


def url_of(client: ApprovalsClient) -> str:
    return client.nc.connected_url.geturl()  # type: ignore[union-attr]


async def run_example(name: str, step: str, env: dict[str, str]) -> str:
    """The docs page's example ``name`` run as a process, given ``step``; its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example(name), step, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, (out.decode(), err.decode())
    return out.decode()
