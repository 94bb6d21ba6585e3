"""The adapters, by kind: one small interface (``Adapter``), one module each. A new one is a
module and a line in ``ADAPTERS``; nothing else changes."""

from __future__ import annotations

from approvals.services.delivery.adapters.base import Adapter, DeliveryError
from approvals.services.delivery.adapters.discord import DiscordAdapter
from approvals.services.delivery.adapters.email import EmailAdapter
from approvals.services.delivery.adapters.inbox import InboxAdapter
from approvals.services.delivery.adapters.slack import SlackAdapter
from approvals.services.delivery.adapters.webhook import WebhookAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    InboxAdapter.kind: InboxAdapter,
    WebhookAdapter.kind: WebhookAdapter,
    EmailAdapter.kind: EmailAdapter,
    SlackAdapter.kind: SlackAdapter,
    DiscordAdapter.kind: DiscordAdapter,
}

__all__ = ["ADAPTERS", "Adapter", "DeliveryError"]
