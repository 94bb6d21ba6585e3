"""Discord: a message with an embed of the review fields and Approve / Reject / Details buttons,
posted by the application's bot through Discord's HTTP API (base URL configurable). The buttons
come back to the gateway's interactions endpoint (``services/gateway/discord.py``), verified
with the application's Ed25519 public key."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from approvals.services.delivery.adapters.base import DeliveryError, secret_of
from approvals.services.delivery.fitting import fit, one_line, units

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings

APPROVE, REJECT = "approve", "reject"
SHORT = {"a": APPROVE, "r": REJECT}  # what a button says, so a 64-character workspace fits
# Discord's limits (discord.com/developers/docs/resources/message#embed-object-embed-limits):
# message content, embed title, description, fields, field name and value, the embed's total.
CONTENT, TITLE, DESCRIPTION, FIELDS, FIELD_NAME, FIELD_VALUE = 2000, 256, 4096, 25, 256, 1024
EMBED_TOTAL = 6000
# A requester's text saying @everyone or <@id> must not ping anyone: the message mentions nobody
# (discord.com/developers/docs/resources/message#allowed-mentions-object).
NO_MENTIONS: dict[str, list[str]] = {"parse": []}


def custom_id(verb: str, approval_id: str, workspace: str) -> str:
    """What a button carries back, within Discord's 100 characters for any workspace id (64 at
    most): a one-letter verb and the approval id's 32 hex digits."""
    short = next(k for k, v in SHORT.items() if v == verb)
    return f"{short}:{uuid.UUID(approval_id).hex}:{workspace}"


def parse_custom_id(value: str) -> tuple[str, str, str]:
    """The verb, approval id and workspace a button carries (``ValueError`` if it is not ours).
    Buttons sent before (``approve:<approval id>:<workspace>``) read the same."""
    verb, approval_id, workspace = value.split(":", 2)
    return SHORT.get(verb, verb), str(uuid.UUID(approval_id)), workspace


def outcome_message(outcome: Outcome) -> dict[str, Any]:
    """The edited message: the outcome and who decided, and no buttons left to press."""
    more = f" [full request]({outcome.web_url})"
    return {"content": fit(outcome.line(), CONTENT, more), "components": [],
            "allowed_mentions": NO_MENTIONS}  # fmt: skip


def message(notice: Notice) -> dict[str, Any]:
    more = f" [full request]({notice.web_url})"
    fields: list[dict[str, Any]] = [
        {"name": fit(label, FIELD_NAME), "value": fit(text or "—", FIELD_VALUE, more),
         "inline": True} for label, text in notice.facts()
    ][:FIELDS]  # fmt: skip
    title, footer = fit(one_line(notice.title), TITLE), f"digest {notice.digest}"
    # The description gets what the embed's total leaves after everything else it shows.
    used = units(title) + units(footer) + sum(units(f["name"] + f["value"]) for f in fields)
    description = fit(notice.summary, min(DESCRIPTION, EMBED_TOTAL - used), more)
    made: dict[str, Any] = {
        "content": fit(f"Approval needed: **{title}**", CONTENT),
        "allowed_mentions": NO_MENTIONS,
        "embeds": [{"title": title, "description": description, "url": notice.web_url,
                    "fields": fields, "footer": {"text": footer}}],
        "components": [{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Approve",
             "custom_id": custom_id(APPROVE, notice.approval_id, notice.workspace_id)},
            {"type": 2, "style": 4, "label": "Reject",
             "custom_id": custom_id(REJECT, notice.approval_id, notice.workspace_id)},
            {"type": 2, "style": 5, "label": "Details", "url": notice.web_url},
            {"type": 2, "style": 5, "label": "Edit…", "url": notice.edit_url},
        ]}],
    }  # fmt: skip
    if notice.passkey:  # only the web inbox signs it: a link there, no buttons that decide
        made["content"] = fit(f"Approval needed: **{title}**\n{notice.PASSKEY_LINE}", CONTENT)
        made["components"] = [{"type": 1, "components": [
            {"type": 2, "style": 5, "label": "Decide with your passkey", "url": notice.web_url},
        ]}]  # fmt: skip
    return made


class DiscordAdapter:
    kind: ClassVar[str] = "discord"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        if not channel.target:
            raise DeliveryError("the Discord channel names no target channel id", permanent=True)
        url = f"{self.settings.discord_api_url.rstrip('/')}/channels/{channel.target}/messages"
        answer = await self._call("POST", url, secret_of(channel), message(notice))
        return f"{answer['channel_id']}:{answer['id']}"

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        """Edit the message: the outcome and who decided, and no buttons left to press."""
        if not ref or ":" not in ref:
            return
        channel_id, message_id = ref.split(":", 1)
        base = self.settings.discord_api_url.rstrip("/")
        url = f"{base}/channels/{channel_id}/messages/{message_id}"
        await self._call("PATCH", url, secret_of(channel), outcome_message(outcome))

    async def _call(self, method: str, url: str, token: str, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bot {token}"}
        try:
            async with httpx.AsyncClient(timeout=self.settings.delivery_timeout_s) as http:
                response = await http.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryError(f"Discord unreachable: {error!r}") from None
        if not response.is_success:
            permanent = 400 <= response.status_code < 500 and response.status_code != 429
            raise DeliveryError(f"Discord answered {response.status_code}: "
                                f"{response.text[:200]}", permanent=permanent)  # fmt: skip
        return response.json()
