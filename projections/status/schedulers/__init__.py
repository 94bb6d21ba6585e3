"""Timers: expiry of requests nobody answered, and reminders and escalation while they wait.

They read the status view and run in the projection service (on the view's lease holder), so
they live beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client

    from approvals.projections.status.view import StatusView

log = logging.getLogger(__name__)
T = TypeVar("T")


class Ticker:
    """A timer over the status view: ``tick()`` every ``interval_s`` seconds until stopped.

    Ticks keep nothing in memory between them, so a restart picks up where it stopped."""

    name = "ticker"

    def __init__(
        self, view: StatusView, nc: Client, *, interval_s: float = 1.0, blocking_io: bool = False
    ) -> None:
        self.view = view
        self.nc = nc
        self.interval_s = interval_s
        self.blocking_io = blocking_io
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[Any] | None = None

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """A read of the view: in a thread on a blocking backend, shielded and awaited by
        stop(), so the view is never closed under it."""
        if not self.blocking_io:
            return query(*args)
        self._reading = asyncio.ensure_future(asyncio.to_thread(query, *args))
        result: T = await asyncio.shield(self._reading)
        return result

    async def tick(self) -> int:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reading is not None:
            await asyncio.wait({self._reading})
            self._reading = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("%s tick failed; trying again next tick", self.name)
            await asyncio.sleep(self.interval_s)  # a timer's tick, not a wait for a condition
