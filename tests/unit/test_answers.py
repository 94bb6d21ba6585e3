"""An answer instead of a decision, as the channels that carried a request are told it."""

from __future__ import annotations

from approvals.services.delivery.adapters import discord, slack
from approvals.services.delivery.notice import Outcome

ANSWERED = Outcome(
    workspace_id="acme", approval_id="0b8f5a52-7c1e-4d7a-9a51-1f2a3b4c5d6e",
    title="Sync 40 contacts", status="responded", decided_by="user:ana",
    reason="Which list?", web_url="https://approvals.example.com/x",
)  # fmt: skip


def test_slack_and_discord_edit_an_answered_request_to_the_answer_with_no_buttons() -> None:
    said = "Sync 40 contacts: answered by user:ana instead of deciding: Which list?"
    assert ANSWERED.line() == said
    text, blocks = slack.outcome_message(ANSWERED)
    assert said in text
    assert [b["type"] for b in blocks] == ["section"]
    edited = discord.outcome_message(ANSWERED)
    assert said in edited["content"]
    assert edited["components"] == []
