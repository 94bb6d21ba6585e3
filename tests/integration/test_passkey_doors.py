"""Doors that cannot run the passkey ceremony, over the real services: a Slack message of a
request that needs a passkey has no button that decides, and a decision through Slack anyway
(an approve action crafted from the message) is refused with ``passkey_required`` and the web
page to finish on; nothing is recorded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

from approvals.schemas.workspace import Passkeys
from tests.helpers import eventually
from tests.integration.test_delivery import (
    approval_of,
    ask,
    delivery_settings,
    hooks,
    mailbox,
    slack_callback,
    slack_door,
    stack,
)

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient
    from approvals.services.approvals.service import CommandService
    from approvals.services.runtime.settings import Settings

__all__ = ["delivery_settings", "hooks", "mailbox", "stack"]  # the fixtures


async def test_slack_cannot_decide_a_request_that_needs_a_passkey(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings,
) -> None:  # fmt: skip
    commands, client = stack
    async with slack_door(client, delivery_settings,
                          passkeys=Passkeys(require=("high",))) as (slack, gateway):  # fmt: skip
        approval = await ask(client, risk="high", n=22)
        # Check: the message says a passkey is needed, and its only button is the link
        await eventually(lambda: len(slack.of("chat.postMessage")) == 1)
        [posted] = slack.of("chat.postMessage")
        [buttons] = [b for b in posted["blocks"] if b["type"] == "actions"]
        assert [(e["action_id"], e.get("url")) for e in buttons["elements"]] == [
            ("details", approval["web_url"])
        ]
        assert "needs your passkey" in json.dumps(posted["blocks"])
        # Check: an approve action sent anyway is refused with the page, nothing recorded
        value = json.dumps({"w": "acme", "a": approval["id"], "d": approval["digest"]})
        payload = {"type": "block_actions", "user": {"id": "U111"},
                       "channel": {"id": "C0123"}, "message": {"ts": "1700000000.000001"},
                       "actions": [{"action_id": "approve", "value": value}]}  # fmt: skip
        body, headers = slack_callback(payload)
        async with httpx.AsyncClient(timeout=30) as http:
            clicked = await http.post(f"{gateway.url}/integrations/slack/interactions",
                                          content=body, headers=headers)  # fmt: skip
        error = clicked.json()["error"]
        assert (error["code"], error["details"]["web_url"]) == (
            "passkey_required",
            approval["web_url"],
        )
        assert approval["web_url"] in error["message"]
        decided = approval_of(commands, approval["id"])
        assert (decided.status, decided.votes, decided.decided_by) == ("pending", (), None)
