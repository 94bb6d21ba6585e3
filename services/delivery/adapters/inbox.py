"""The web inbox: always on. The request is there as soon as the status view has it."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings


class InboxAdapter:
    kind: ClassVar[str] = "inbox"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        return notice.web_url

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        return None  # the inbox's pages follow the bus themselves
