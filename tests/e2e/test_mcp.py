"""`approvals mcp` driven by the MCP SDK's own client, over stdio (docs/agents.md's configuration,
as an MCP client launches it) and over streamable HTTP (with an API key, through the gateway):
the whole flow, clear tool errors, and no tool that decides."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService
from approvals.services.approvals.service import CommandService
from approvals.services.gateway.app import GatewayService
from approvals.services.runtime.natsserver import free_port
from approvals.services.runtime.settings import Settings
from tests.helpers import eventually, send
from tests.workspaces import ADMIN, configure_over_nats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from approvals.services.runtime.natsserver import NatsServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
AGENTS_PAGE = Path(__file__).parents[2] / "docs" / "agents.md"
BIN = Path(sys.executable).parent
AGENT = "service:enricher"
TOOLS = {
    "check_approval_needed",
    "request_approval",
    "get_approval",
    "wait_for_approval",
    "redeem_approval",
    "report_run",
    "list_my_requests",
}
ACTION = {
    "kind": "crm_write",
    "mode": "live",
    "destination": "hubspot:list/42",
    "preview": {"rows": 40},
}
PAYLOAD = {"contacts": 40}
ASK = {
    "skill_name": "crm-sync",
    "skill_execution_id": "run-1",
    "title": "Sync 40 contacts",
    "summary": "Writes 40 contacts to HubSpot",
    "risk_level": "high",
    "action": ACTION,
    "proposed_payload": PAYLOAD,
}


def docs_config() -> dict[str, Any]:
    """The MCP client configuration docs/agents.md shows (the block after its marker)."""
    text = AGENTS_PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- mcp-config -->\s*```json\n(.*?)```", text, re.S)
    assert block, "docs/agents.md has no MCP configuration example"
    config: dict[str, Any] = json.loads(block.group(1))["mcpServers"]["approvals"]
    return config


@pytest.fixture
async def stack(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ApprovalsClient]:
    """The command service, the status projection and the gateway on the test's server, the
    workspace ``acme`` configured; the client speaks as its members."""
    settings = Settings(
        nats_url=nats_server.url,
        sqlite_path=tmp_path / "approvals.db",
        view_sqlite_path=tmp_path / "status.db",
    )
    async with CommandService(settings), ProjectionService(settings):
        client = await ApprovalsClient.connect(nats_server.url, "acme", 10.0)
        await configure_over_nats(client.nc, "acme")
        try:
            yield client
        finally:
            await client.close()


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


async def whole_flow(mcp: Client, people: ApprovalsClient) -> str:
    """check, request, a person approves through the command service, wait, redeem, report."""
    tools = {t.name for t in (await mcp.list_tools()).tools}
    # Check: the agent's tools are there, and none approves, rejects or cancels.
    assert tools == TOOLS
    assert not {t for t in tools if re.search(r"approve(?!al)|reject|cancel|decide", t)}

    check = structured(await mcp.call_tool("check_approval_needed", ASK))
    assert check["approval_required"] is True
    assert check["policy"]["row"], check
    asked = structured(await mcp.call_tool("request_approval", ASK))
    assert (asked["outcome"], asked["may_proceed"], asked["status"]) == (
        "approval_required",
        False,
        "pending",
    )
    assert asked["web_url"].endswith(f"/approvals/{asked['approval_id']}")
    assert asked["requested_by"] == AGENT
    approval_id = asked["approval_id"]
    # Check: a bounded wait returns the pending state, for the agent to come back later.
    waited = structured(
        await mcp.call_tool("wait_for_approval", {"approval_id": approval_id, "timeout_s": 0.5})
    )
    assert (waited["status"], waited["timed_out"]) == ("pending", True)

    approved = await send(
        people,
        "approve",
        {"approval_id": approval_id, "approver": "user:ana", "digest": asked["digest"]},
    )
    assert approved["outcome"] == "approved", approved
    waited = structured(
        await mcp.call_tool("wait_for_approval", {"approval_id": approval_id, "timeout_s": 30})
    )
    assert (waited["status"], waited["decided_by"]) == ("approved", "user:ana")

    # Check: redeeming something other than what was approved is refused with its code.
    other = await mcp.call_tool(
        "redeem_approval",
        {"approval_id": approval_id, "action": ACTION, "proposed_payload": {"contacts": 41}},
    )
    assert "digest_mismatch: " in error_text(other), error_text(other)
    assert "the proposed_payload about to run is not" in error_text(other), error_text(other)
    redeemed = structured(
        await mcp.call_tool(
            "redeem_approval",
            {"approval_id": approval_id, "action": ACTION, "proposed_payload": PAYLOAD},
        )
    )
    assert redeemed["outcome"] == "redeemed", redeemed
    reported = structured(
        await mcp.call_tool(
            "report_run",
            {
                "approval_id": approval_id,
                "credits_used": 0,
                "outcome": "succeeded",
                "summary": "40 contacts synced",
            },
        )
    )
    assert reported["outcome"] == "run_reported", reported
    got = structured(await mcp.call_tool("get_approval", {"approval_id": approval_id}))
    assert got["status"] == "approved"

    async def listed() -> bool:
        mine = structured(await mcp.call_tool("list_my_requests", {}))["approvals"]
        return [a["approval_id"] for a in mine] == [approval_id]

    await eventually(listed)
    return str(approval_id)


async def an_answer(mcp: Client, people: ApprovalsClient) -> None:
    """A person answers instead of deciding: the agent reads the message and must not run it."""
    asked = structured(await mcp.call_tool("request_approval",
                                           {**ASK, "skill_execution_id": "run-3"}))  # fmt: skip
    approval_id = asked["approval_id"]
    answered = await send(people, "respond", {"approval_id": approval_id, "approver": "user:ana",
                                              "message": "Which list is this?"})  # fmt: skip
    assert answered["outcome"] == "responded", answered
    # Check: waiting and getting both say it ended with the person's message, not to run it.
    waited = structured(
        await mcp.call_tool("wait_for_approval", {"approval_id": approval_id, "timeout_s": 30})
    )
    got = structured(await mcp.call_tool("get_approval", {"approval_id": approval_id}))
    for seen in (waited, got):
        assert (seen["status"], seen["message"], seen["reason"]) == (
            "responded", "Which list is this?", "Which list is this?",
        )  # fmt: skip
        assert "Do not run it" in seen["next"]
    # Check: redeeming it is refused with its code.
    redeemed = await mcp.call_tool("redeem_approval", {"approval_id": approval_id,
                                                       "action": ASK["action"]})  # fmt: skip
    assert "not_approved" in error_text(redeemed)


async def a_rejection(mcp: Client, people: ApprovalsClient) -> None:
    """A person rejects and asks for a new request: the agent learns why, and that it may retry."""
    asked = structured(await mcp.call_tool("request_approval",
                                           {**ASK, "skill_execution_id": "run-2"}))  # fmt: skip
    approval_id = asked["approval_id"]
    assert asked["rerun"] is False
    rejected = await send(people, "reject", {"approval_id": approval_id, "approver": "user:ana",
                                             "reason": "wrong list", "rerun": True})  # fmt: skip
    assert rejected["outcome"] == "rejected", rejected
    # Check: waiting and getting both carry the person's reason and the rerun request.
    waited = structured(
        await mcp.call_tool("wait_for_approval", {"approval_id": approval_id, "timeout_s": 30})
    )
    assert (waited["status"], waited["reason"], waited["rerun"]) == ("rejected", "wrong list", True)
    got = structured(await mcp.call_tool("get_approval", {"approval_id": approval_id}))
    assert (got["status"], got["reason"], got["rerun"]) == ("rejected", "wrong list", True)


async def an_edited_approval(mcp: Client, people: ApprovalsClient) -> None:
    """A person approves a narrower version: the agent is told what to run, and runs that."""
    asked = structured(await mcp.call_tool("request_approval",
                                           {**ASK, "skill_execution_id": "run-3"}))  # fmt: skip
    approval_id = asked["approval_id"]
    approved = await send(people, "approve", {
        "approval_id": approval_id, "approver": "user:ana", "digest": asked["digest"],
        "edits": {"max_credits": 20, "proposed_payload": {"contacts": 20}},
    })  # fmt: skip
    assert approved["outcome"] == "approved", approved
    # Check: waiting and getting both return the approved action and payload
    waited = structured(
        await mcp.call_tool("wait_for_approval", {"approval_id": approval_id, "timeout_s": 30})
    )
    assert waited["approved_payload"] == {"contacts": 20}
    assert waited["approved_action"]["max_credits"] == 20
    got = structured(await mcp.call_tool("get_approval", {"approval_id": approval_id}))
    assert got["approved_digest"] == approved["approval"]["approved_digest"] != got["digest"]
    # Check: what the agent asked for no longer redeems; the approved version does
    asked_for = await mcp.call_tool("redeem_approval", {"approval_id": approval_id,
                                                        "action": ACTION,
                                                        "proposed_payload": PAYLOAD})  # fmt: skip
    assert "digest_mismatch" in error_text(asked_for)
    redeemed = structured(await mcp.call_tool("redeem_approval", {
        "approval_id": approval_id, "action": got["approved_action"],
        "proposed_payload": got["approved_payload"],
    }))  # fmt: skip
    assert redeemed["outcome"] == "redeemed", redeemed


async def bad_arguments(mcp: Client) -> None:
    # Check: each bad argument is a tool error saying what is wrong; nothing is stored.
    no_ceiling = {**ASK, "action": {"kind": "provider_call", "mode": "live", "provider": "x"}}
    assert "credit_ceiling_required" in error_text(
        await mcp.call_tool("request_approval", no_ceiling)
    )
    wrong_kind = {**ASK, "action": {"kind": "teleport", "mode": "live"}}
    assert "kind" in error_text(await mcp.call_tool("request_approval", wrong_kind))
    unknown = await mcp.call_tool("get_approval", {"approval_id": "nope"})
    assert "invalid" in error_text(unknown) or "not_found" in error_text(unknown)
    missing = await mcp.call_tool(
        "get_approval", {"approval_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert "not_found" in error_text(missing)
    too_long = await mcp.call_tool("wait_for_approval", {"approval_id": "x", "timeout_s": 9999})
    assert "timeout_s" in error_text(too_long)
    # Check: a decision tool does not exist.
    assert "approve" in error_text(await mcp.call_tool("approve", {"approval_id": "x"}))


async def test_over_stdio_as_the_docs_configure_it(
    stack: ApprovalsClient, nats_server: NatsServer
) -> None:
    config = docs_config()
    env = {**os.environ, **config["env"], "NATS_URL": nats_server.url}
    server = StdioServerParameters(
        command=str(BIN / config["command"]), args=config["args"], env=env
    )
    async with Client(server) as mcp:
        approval_id = await whole_flow(mcp, stack)
        await a_rejection(mcp, stack)
        await an_answer(mcp, stack)
        await an_edited_approval(mcp, stack)
        await bad_arguments(mcp)
    # Check: the agent's events name the door it came in by.
    history = json.loads(await stack.query("history", {"approval_id": approval_id}))
    doors = {e["type"]: e["event"].get("via") for e in history["timeline"]}
    mcp_door = {"channel": "mcp", "auth": "nats", "ref": None}
    assert doors["requested"] == doors["redeemed"] == mcp_door
    assert doors["approved"] != mcp_door  # the person's decision came in by another door


@contextlib.contextmanager
def mcp_over_http(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "mcp.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "approvals"), "mcp", "--transport", "http", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_over_http_with_an_api_key_through_the_gateway(
    stack: ApprovalsClient, nats_server: NatsServer, tmp_path: Path
) -> None:
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    created = await send(
        stack,
        "create_api_key",
        {
            "key_id": key_id,
            "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "actor": AGENT,
            "name": "mcp",
            "by": ADMIN,
        },
    )
    assert created["ok"], created
    settings = Settings(nats_url=nats_server.url, gateway_secret="s" * 32)
    gateway = GatewayService(settings, port=free_port())
    await gateway.start()
    try:
        env = {
            "APPROVALS_WORKSPACE": "acme",
            "APPROVALS_MCP_AS": AGENT,
            "APPROVALS_MCP_API_URL": gateway.url,
            "APPROVALS_MCP_API_KEY": f"apk_{key_id}.{secret}",
            "NATS_URL": "nats://127.0.0.1:1",
        }
        with mcp_over_http(env, tmp_path) as url:

            def listening() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(url, timeout=2)
                    return True
                return False

            await eventually(listening, within_s=30)
            async with Client(url) as mcp:
                await whole_flow(mcp, stack)
                await a_rejection(mcp, stack)
                await an_answer(mcp, stack)
                await bad_arguments(mcp)
    finally:
        await gateway.stop()
