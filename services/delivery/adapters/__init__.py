"""The adapters, by kind: one small interface (``Adapter``), one module each. A new one is a
module and a line in ``ADAPTERS``; nothing else changes."""

from __future__ import annotations

from services.delivery.adapters.base import Adapter, DeliveryError
from services.delivery.adapters.discord import DiscordAdapter
from services.delivery.adapters.email import EmailAdapter
from services.delivery.adapters.inbox import InboxAdapter
from services.delivery.adapters.slack import SlackAdapter
from services.delivery.adapters.webhook import WebhookAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    InboxAdapter.kind: InboxAdapter,
    WebhookAdapter.kind: WebhookAdapter,
    EmailAdapter.kind: EmailAdapter,
    SlackAdapter.kind: SlackAdapter,
    DiscordAdapter.kind: DiscordAdapter,
}

__all__ = ["ADAPTERS", "Adapter", "DeliveryError"]
