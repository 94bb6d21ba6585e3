"""Discord: a message with an embed of the review fields and Approve / Reject / Details buttons,
posted by the application's bot through Discord's HTTP API (base URL configurable). The buttons
come back to the gateway's interactions endpoint (``services/gateway/discord.py``), verified
with the application's Ed25519 public key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from services.delivery.adapters.base import DeliveryError, secret_of

if TYPE_CHECKING:
    from schemas.workspace import ChannelConfig
    from services.delivery.notice import Notice, Outcome
    from services.settings import Settings

APPROVE, REJECT = "approve", "reject"


def custom_id(verb: str, approval_id: str, workspace: str) -> str:
    """What a button carries back (Discord allows 100 characters)."""
    return f"{verb}:{approval_id}:{workspace}"[:100]


def parse_custom_id(value: str) -> tuple[str, str, str]:
    """The verb, approval id and workspace a button carries (``ValueError`` if it is not ours)."""
    verb, approval_id, workspace = value.split(":", 2)
    return verb, approval_id, workspace


def outcome_message(outcome: Outcome) -> dict[str, Any]:
    """The edited message: the outcome and who decided, and no buttons left to press."""
    return {"content": outcome.line()[:2000], "components": []}


def message(notice: Notice) -> dict[str, Any]:
    fields = [{"name": label, "value": text[:1024] or "—", "inline": True}
              for label, text in notice.facts()]  # fmt: skip
    return {
        "content": f"Approval needed: **{notice.title}**"[:2000],
        "embeds": [{"title": notice.title[:256], "description": notice.summary[:4096],
                    "url": notice.web_url, "fields": fields[:25],
                    "footer": {"text": f"digest {notice.digest}"}}],
        "components": [{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Approve",
             "custom_id": custom_id(APPROVE, notice.approval_id, notice.workspace_id)},
            {"type": 2, "style": 4, "label": "Reject",
             "custom_id": custom_id(REJECT, notice.approval_id, notice.workspace_id)},
            {"type": 2, "style": 5, "label": "Details", "url": notice.web_url},
        ]}],
    }  # fmt: skip


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
