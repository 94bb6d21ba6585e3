"""The status projection service: projector, query handlers and the expiry scheduler."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from projections.status.handlers import QueryHandlers
from projections.status.projector import Projector
from projections.status.storage import open_view
from projections.status.waiters import Waiters
from schemas.subjects import STREAM
from services import bus
from services.ops import CONSUMER_LAG, PROJECTION_LAG, lag_of
from services.scheduler.expiry import ExpiryScheduler
from services.scheduler.reminders import ReminderScheduler

if TYPE_CHECKING:
    from projections.status.view import StatusView
    from services.settings import Settings

log = logging.getLogger(__name__)


class ProjectionService:
    """``async with ProjectionService(settings): ...``; ``scheduler=False`` leaves expiry out."""

    name = "projection"

    def __init__(self, settings: Settings, *, scheduler: bool = True) -> None:
        self.settings = settings
        self.broker = bus.broker(settings, log)
        self.with_scheduler = scheduler
        self.view: StatusView | None = None
        self.waiters = Waiters()
        self._parts: list[Projector | QueryHandlers | ExpiryScheduler | ReminderScheduler] = []

    async def start(self) -> None:
        self.view = await asyncio.to_thread(open_view, self.settings)
        blocking = self.settings.store == "postgres"
        await self.broker.start()
        nc = self.broker.connection
        self._parts = [
            Projector(self.view, nc, on_change=self.waiters.notify),
            QueryHandlers(self.view, nc, self.waiters, self.settings, blocking_io=blocking),
        ]
        if self.with_scheduler:
            self._parts.append(ExpiryScheduler(self.view, nc, blocking_io=blocking))
            self._parts.append(ReminderScheduler(self.view, nc, blocking_io=blocking))
        for part in self._parts:
            await part.start()

    async def stop(self) -> None:
        for part in reversed(self._parts):
            await part.stop()
        self._parts = []
        await self.broker.stop()
        if self.view is not None:
            self.view.datastore.close()  # type: ignore[attr-defined]

    async def ready(self) -> bool:
        """Answering queries: connected, and the view answers (its position against the
        stream's last event: the projection's lag)."""
        view = self.view
        if view is None or not self._parts or not self.broker.connection.is_connected:
            return False
        position = await asyncio.to_thread(view.position)
        js = self.broker.connection.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        PROJECTION_LAG.set(max(0, last - position))
        projector = self._parts[0]
        assert isinstance(projector, Projector)
        info = await js.consumer_info(STREAM, projector.durable)
        CONSUMER_LAG.labels(projector.durable).set(lag_of(info))
        return True

    async def __aenter__(self) -> ProjectionService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
