"""Slack: a Block Kit message through the Web API (``slack_sdk``; its base URL configurable) with
the review fields and Approve / Reject / Details buttons. The buttons come back to the gateway's
interactivity endpoint (``services/gateway/slack.py``), which verifies Slack's signature."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackObjectFormationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from approvals.services.delivery.adapters.base import DeliveryError, secret_of
from approvals.services.delivery.fitting import fit, one_line

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings

# Slack's limits (docs.slack.dev/reference/block-kit/blocks): a header's text, a section's text,
# each of a section's fields and their count.
HEADER_TEXT, SECTION_TEXT, FIELD_TEXT, FIELDS = 150, 3000, 2000, 10


def escape(text: str) -> str:
    """Text from a requester or an approver as Slack shows it, not as markup: ``<!channel>``
    would notify the whole channel and ``<https://elsewhere|Details>`` would pass off a link as
    ours (docs.slack.dev/messaging/formatting-message-text: escape ``&``, ``<`` and ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def client(settings: Settings, token: str, timeout_s: float) -> WebClient:
    return WebClient(token=token, base_url=settings.slack_api_url.rstrip("/") + "/",
                     timeout=int(timeout_s))  # fmt: skip


def blocks(notice: Notice) -> list[dict[str, Any]]:
    """The message: what a reviewer must see, and the buttons (their value names the approval,
    its workspace and the digest of what is shown). Built with slack_sdk's block models, whose
    ``to_dict`` checks Slack's limits; every text is fitted to them first."""
    value = json.dumps({"w": notice.workspace_id, "a": notice.approval_id, "d": notice.digest})
    more = f" <{notice.web_url}|full request>"
    title = one_line(notice.title) or "Approval needed"  # a blank header is refused
    fields = [MarkdownTextObject(text=fit(f"*{label}*\n{text}", FIELD_TEXT, more, escape))
              for label, text in notice.facts()]  # fmt: skip
    summary = fit(notice.summary or " ", SECTION_TEXT, more, escape)
    made = [
        HeaderBlock(text=PlainTextObject(text=fit(title, HEADER_TEXT))),
        SectionBlock(text=MarkdownTextObject(text=summary)),
        SectionBlock(fields=fields[:FIELDS]),
        ActionsBlock(block_id="decision", elements=[
            ButtonElement(action_id="approve", style="primary", value=value, text="Approve"),
            ButtonElement(action_id="reject", style="danger", value=value, text="Reject"),
            ButtonElement(action_id="details", url=notice.web_url, text="Details"),
            ButtonElement(action_id="edit", url=notice.edit_url, text="Edit…"),
        ]),
    ]  # fmt: skip
    if notice.passkey:  # only the web inbox signs it: a link there, no buttons that decide
        made[-1:] = [
            SectionBlock(text=MarkdownTextObject(text=escape(notice.PASSKEY_LINE))),
            ActionsBlock(block_id="decision", elements=[ButtonElement(
                action_id="details", url=notice.web_url, text="Decide with your passkey")]),
        ]  # fmt: skip
    return [block.to_dict() for block in made]


def outcome_message(outcome: Outcome) -> tuple[str, list[dict[str, Any]]]:
    """The edited message: its text and its blocks (no buttons left to press)."""
    text = fit(outcome.line(), SECTION_TEXT, f" <{outcome.web_url}|full request>", escape)
    return text, [SectionBlock(text=MarkdownTextObject(text=text)).to_dict()]


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
                text=fit(f"Approval needed: {one_line(notice.title)}", SECTION_TEXT, escape=escape),
            )  # fmt: skip
        except SlackObjectFormationError as error:  # a message Slack would refuse: ours to fix
            raise DeliveryError(f"not a valid Slack message: {error}", permanent=True) from None
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
