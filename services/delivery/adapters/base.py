"""The one interface every delivery adapter has."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings


class DeliveryError(Exception):
    """The channel did not take it (this attempt); ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Adapter(Protocol):
    kind: ClassVar[str]

    def __init__(self, settings: Settings) -> None: ...

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        """Put the notice on the channel; the channel's own reference for it (a message id).
        ``delivery_id`` is stable for this approval and channel: a receiver can drop repeats."""
        ...

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        """Show on the channel how the request it carried ended (``ref``: what ``send`` gave)."""
        ...


def secret_of(channel: ChannelConfig) -> str:
    """The channel's credential, from the environment variable its ``secret`` names."""
    if channel.secret is None:
        raise DeliveryError("the channel names no secret", permanent=True)
    value = os.environ.get(channel.secret)
    if not value:
        raise DeliveryError(f"the secret {channel.secret} is not set", permanent=True)
    return value
