"""Slack: a Block Kit message through the Web API (``slack_sdk``; its base URL configurable) with
the review fields and Approve / Reject / Details buttons. The buttons come back to the gateway's
interactivity endpoint (``services/gateway/slack.py``), which verifies Slack's signature."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from services.delivery.adapters.base import DeliveryError, secret_of

if TYPE_CHECKING:
    from schemas.workspace import ChannelConfig
    from services.delivery.notice import Notice, Outcome
    from services.settings import Settings


def client(settings: Settings, token: str, timeout_s: float) -> WebClient:
    return WebClient(token=token, base_url=settings.slack_api_url.rstrip("/") + "/",
                     timeout=int(timeout_s))  # fmt: skip


def blocks(notice: Notice) -> list[dict[str, Any]]:
    """The message: what a reviewer must see, and the buttons (their value names the approval,
    its workspace and the digest of what is shown)."""
    value = json.dumps({"w": notice.workspace_id, "a": notice.approval_id, "d": notice.digest})
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{text}"} for label, text in notice.facts()]
    return [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notice.summary or " "}},
        {"type": "section", "fields": fields[:10]},
        {"type": "actions", "block_id": "decision", "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "reject", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
            {"type": "button", "action_id": "details", "url": notice.web_url,
             "text": {"type": "plain_text", "text": "Details"}},
        ]},
    ]  # fmt: skip


class SlackAdapter:
    kind: ClassVar[str] = "slack"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        if not channel.target:
            raise DeliveryError("the Slack channel names no target channel id", permanent=True)
        web = client(self.settings, secret_of(channel), self.settings.delivery_timeout_s)
        try:
            response = await asyncio.to_thread(
                web.chat_postMessage, channel=channel.target, blocks=blocks(notice),
                text=f"Approval needed: {notice.title}",
            )  # fmt: skip
        except SlackApiError as error:
            raise DeliveryError(f"Slack refused: {error.response.get('error')}",
                                permanent=error.response.status_code < 500) from None  # fmt: skip
        except OSError as error:
            raise DeliveryError(f"Slack unreachable: {error!r}") from None
        return f"{response['channel']}:{response['ts']}"

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        """Edit the message: the outcome and who decided, and no buttons left to press."""
        if not ref or ":" not in ref:
            return
        slack_channel, ts = ref.split(":", 1)
        await update(self.settings, secret_of(channel), slack_channel, ts, outcome)


def outcome_message(outcome: Outcome) -> tuple[str, list[dict[str, Any]]]:
    """The edited message: its text and its blocks (no buttons left to press)."""
    text = outcome.line()
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


async def update(
    settings: Settings, token: str, slack_channel: str, ts: str, outcome: Outcome
) -> None:
    text, blocks = outcome_message(outcome)
    web = client(settings, token, settings.delivery_timeout_s)
    try:
        await asyncio.to_thread(web.chat_update, channel=slack_channel, ts=ts, text=text,
                                blocks=blocks)  # fmt: skip
    except SlackApiError as error:
        raise DeliveryError(f"Slack refused the update: {error.response.get('error')}",
                            permanent=error.response.status_code < 500) from None  # fmt: skip
    except OSError as error:
        raise DeliveryError(f"Slack unreachable: {error!r}") from None
