"""A lease: one process at a time does a job (the relay's publishing), another takes over when
the holder dies.

The lease is a key in the JetStream key-value bucket ``approvals_leases``, whose age limit is the
lease's length: the holder renews it (a compare-and-set on its revision) every third of that; a
holder that stops renewing loses it when the key ages out, and any other process's ``create`` (only
if absent) then wins it. A holder that stops cleanly deletes it, so another takes over at once.

A lease is an efficiency, not the guarantee: two processes may briefly both believe they hold it
(a pause longer than the lease); what they do must stay correct then (the relay publishes with
``Nats-Expected-Last-Sequence``, so a second publisher only meets refusals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.js.errors import KeyWrongLastSequenceError

from approvals.services.runtime.bus import ensure_kv

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)
BUCKET = "approvals_leases"


class Lease:
    def __init__(self, nc: Client, name: str, *, ttl_s: float = 10.0) -> None:
        self.nc = nc
        self.name = name
        self.ttl_s = ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.held = asyncio.Event()
        self._revision: int | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await ensure_kv(self.nc.jetstream(), BUCKET, ttl=self.ttl_s)
        # The bucket's age limit is the lease's length, whatever this process was told.
        self.ttl_s = (await self._kv.status()).ttl or self.ttl_s
        await self._try()
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self.held.is_set() and self._kv is not None and self._revision is not None:
            with contextlib.suppress(NatsError, TimeoutError, KeyWrongLastSequenceError):
                await self._kv.delete(self.name, last=self._revision)  # hand over at once
        self.held.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self._try()
            except (NatsError, TimeoutError) as error:
                log.warning("lease %s: the bus did not answer (%s)", self.name, error)

    async def _try(self) -> None:
        """Renew the lease if held; take it if it is free."""
        assert self._kv is not None
        try:
            if self.held.is_set() and self._revision is not None:
                self._revision = await self._kv.update(self.name, self.holder.encode(),
                                                       last=self._revision)  # fmt: skip
            else:
                self._revision = await self._kv.create(self.name, self.holder.encode())
                log.info("lease %s taken by %s", self.name, self.holder)
            self.held.set()
        except KeyWrongLastSequenceError:
            if self.held.is_set():
                log.warning("lease %s lost by %s", self.name, self.holder)
            self.held.clear()
            self._revision = None
