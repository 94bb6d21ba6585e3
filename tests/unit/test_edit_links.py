"""Slack, Discord and email cannot edit a request in place: each carries an "Edit…" link to the
web page with its edit form open, beside the decision buttons (still within each channel's
limits, which tests/unit/test_message_limits.py checks on the same messages)."""

from __future__ import annotations

from approvals.services.delivery.adapters import discord, email, slack
from approvals.services.runtime.settings import Settings
from tests.unit.test_message_limits import NOTICES


def test_slack_carries_an_edit_link_to_the_web_page() -> None:
    notice = NOTICES[0]
    [actions] = [b for b in slack.blocks(notice) if b["type"] == "actions"]
    edit = [e for e in actions["elements"] if e.get("action_id") == "edit"]
    assert [(e["text"]["text"], e["url"]) for e in edit] == [("Edit…", f"{notice.web_url}#edit")]


def test_discord_carries_an_edit_link_to_the_web_page() -> None:
    notice = NOTICES[0]
    buttons = discord.message(notice)["components"][0]["components"]
    assert {"type": 2, "style": 5, "label": "Edit…", "url": f"{notice.web_url}#edit"} in buttons
    assert len(buttons) <= 5  # Discord's most per action row


def test_email_carries_an_edit_link_to_the_web_page() -> None:
    notice = NOTICES[0]
    adapter = email.EmailAdapter(Settings())
    message = adapter.compose(notice, "ana@example.com", "approvals@example.com", "d-1")
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert f"Edit, then approve: {notice.web_url}#edit" in plain.get_content()
    assert f'href="{notice.web_url}#edit">Edit…</a>' in rich.get_content()
