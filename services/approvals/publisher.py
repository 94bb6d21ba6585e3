"""Pipelined JetStream publishing: send many messages, then collect every acknowledgement.

nats-py's ``publish_async`` leaves a future pending forever when the server answers with an
error (its reply handler raises instead of failing the future), and the relay relies on such
errors (``wrong last sequence``) to keep the stream in store order. This publisher has one reply
subscription of its own and fails each future with the server's error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription


class PublishRefused(Exception):
    """The stream refused a message, or no stream took it."""


class PipelinedPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = ""
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._counter = itertools.count()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        self.cancel_pending()

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[int]:
        """Send one message; the future resolves to its stream sequence."""
        token = str(next(self._counter))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        await self.nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return future

    def cancel_pending(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    async def _on_ack(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject.rsplit(".", 1)[-1], None)
        if future is None or future.done():
            return
        if not msg.data:  # a status message: 503 no responders
            future.set_exception(PublishRefused(f"no stream answered ({msg.headers})"))
            return
        ack = json.loads(msg.data)
        if "error" in ack:
            future.set_exception(PublishRefused(ack["error"].get("description", str(ack))))
        else:
            future.set_result(int(ack["seq"]))
