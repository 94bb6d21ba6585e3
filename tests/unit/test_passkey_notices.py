"""Where the workspace requires a passkey, Slack, Discord and email cannot decide: their messages
carry no button or link that decides, say a passkey is needed, and link to the web page (the
messages stay within each channel's limits, as tests/unit/test_message_limits.py checks)."""

from __future__ import annotations

import msgspec

from approvals.services.delivery.adapters import discord, email, slack
from approvals.services.delivery.notice import Notice
from approvals.services.runtime.settings import Settings
from tests.unit.test_message_limits import NOTICES

NOTICE = msgspec.structs.replace(NOTICES[0], passkey=True)


def test_slack_says_a_passkey_is_needed_and_links_to_the_page() -> None:
    made = slack.blocks(NOTICE)
    [actions] = [b for b in made if b["type"] == "actions"]
    assert [(e.get("action_id"), e.get("url")) for e in actions["elements"]] == [
        ("details", NOTICE.web_url)
    ]
    assert any(Notice.PASSKEY_LINE in str(b.get("text", {}).get("text")) for b in made)
    # Check: without a passkey requirement the buttons that decide are there, as before
    [plain] = [b for b in slack.blocks(NOTICES[0]) if b["type"] == "actions"]
    assert {"approve", "reject"} <= {e.get("action_id") for e in plain["elements"]}


def test_discord_says_a_passkey_is_needed_and_links_to_the_page() -> None:
    made = discord.message(NOTICE)
    buttons = made["components"][0]["components"]
    assert buttons == [{"type": 2, "style": 5, "label": "Decide with your passkey",
                        "url": NOTICE.web_url}]  # fmt: skip
    assert Notice.PASSKEY_LINE in made["content"]


def test_email_carries_no_confirm_link_and_says_where_to_decide() -> None:
    adapter = email.EmailAdapter(Settings(gateway_secret="s" * 32))
    message = adapter.compose(NOTICE, "ana@example.com", "approvals@example.com", "d-1")
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert "/confirm?" not in plain.get_content() + rich.get_content()
    assert f"{Notice.PASSKEY_LINE}\nDecide: {NOTICE.web_url}" in plain.get_content()
    assert "Decide with your passkey" in rich.get_content()
    # Check: the same request without a passkey requirement gets its confirm links
    other = adapter.compose(NOTICES[0], "ana@example.com", "approvals@example.com", "d-2")
    assert "/confirm?" in str(other.get_body(("plain",)).get_content())  # type: ignore[union-attr]
