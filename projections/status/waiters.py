"""Callers waiting for an approval's row to change, woken by the projector."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection
    from uuid import UUID


class Waiters:
    def __init__(self) -> None:
        self._waiting: defaultdict[UUID, set[asyncio.Future[None]]] = defaultdict(set)

    def register(self, approval_id: UUID) -> asyncio.Future[None]:
        """Register before reading the view, so a change between the read and the wait wakes it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[approval_id].add(future)
        return future

    def discard(self, approval_id: UUID, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(approval_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[approval_id]

    def notify(self, changed: Collection[UUID]) -> None:
        # Catching up, a batch changes thousands of rows and a few of them are waited for.
        if len(self._waiting) < len(changed):
            changed = [approval_id for approval_id in self._waiting if approval_id in changed]
        for approval_id in changed:
            for future in self._waiting.pop(approval_id, ()):
                if not future.done():
                    future.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter: the service stops, and each answers as things stand."""
        waiting, self._waiting = self._waiting, defaultdict(set)
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
