"""The command service: store, handlers and relay, over one broker connection."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from approvals.services.approvals.application import Approvals
from approvals.services.approvals.checkpointer import Checkpointer
from approvals.services.approvals.handlers import CommandHandlers
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.relay import Relay
from approvals.services.approvals.store import store_env
from approvals.services.runtime import bus
from approvals.services.runtime.lease import Lease
from approvals.services.runtime.ops import LEASE_HELD, RELAY_LAG

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)


class CommandService:
    """The only writer of the event store. ``async with CommandService(settings): ...``"""

    name = "commands"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = bus.broker(settings, log)
        self.app: Approvals | None = None
        self.relay: Relay | None = None
        self.handlers: CommandHandlers | None = None
        self.checkpointer: Checkpointer | None = None

    async def start(self) -> None:
        key = self.settings.signing_key_path
        if key is None:
            log.warning("APPROVALS_SIGNING_KEY is not set: receipts are signed with a key held "
                        "in memory, which no verifier will know after a restart")  # fmt: skip
        signer = Signer.from_file(key) if key else Signer.generate()
        self.app = await asyncio.to_thread(
            Approvals,
            store_env(self.settings),
            default_expiry_s=self.settings.default_expiry_s,
            signer=signer,
        )
        await self.broker.start()
        nc = self.broker.connection
        lease = Lease(nc, "relay", ttl_s=self.settings.lease_ttl_s)
        # PostgreSQL: the store's reads and commits wait on the server, in threads (the loop
        # goes on taking commands and publishing meanwhile); SQLite's are CPU, on the loop.
        blocking = self.settings.store == "postgres"
        self.relay = Relay(self.app, nc, lease=lease, blocking_io=blocking)
        await self.relay.start()
        self.handlers = CommandHandlers(
            self.app,
            nc,
            self.settings,
            on_commit=self.relay.nudge,
            blocking_io=blocking,
            lease=lease if self.settings.hand_over_commands else None,
        )
        await self.handlers.start()
        if self.settings.checkpoint_interval_s > 0:
            self.checkpointer = Checkpointer(
                self.app, nc, signer, self.settings.checkpoint_interval_s, lease=lease
            )
            await self.checkpointer.start()

    async def stop(self) -> None:
        if self.handlers is not None:
            await self.handlers.stop()
        if self.checkpointer is not None:
            await self.checkpointer.stop()  # a last checkpoint, while the relay's lease is held
        if self.relay is not None:
            await self.relay.stop()  # publishes what is left, then hands the lease over
        await self.broker.stop()
        if self.app is not None:
            self.app.close()

    async def ready(self) -> bool:
        """Taking commands: connected, and the store answers (its last event: the relay's lag)."""
        if self.app is None or self.relay is None or self.handlers is None:
            return False
        if not self.broker.connection.is_connected:
            return False
        last = await asyncio.to_thread(self.app.last_notification_id)
        LEASE_HELD.set(1 if self.relay.publishing else 0)
        if self.relay.publishing:
            RELAY_LAG.set(max(0, last - self.relay.published_up_to))
        return True

    async def __aenter__(self) -> CommandService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
