"""A small client for the command subjects and the event stream (used by the CLI and tests)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import nats
from nats.js import api

from schemas import subjects
from schemas.codec import encoder, event_decoder, reply_decoder

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    import msgspec
    from nats.aio.client import Client

    from schemas.events import AnyEvent
    from schemas.replies import AnyReply
    from schemas.subjects import CommandVerb


class ApprovalsClient:
    def __init__(self, nc: Client, workspace: str, reply_timeout: float = 5.0) -> None:
        self.nc = nc
        self.workspace = subjects.token(workspace, "workspace")
        self.timeout = reply_timeout

    @classmethod
    async def connect(cls, url: str, workspace: str, reply_timeout: float = 5.0) -> ApprovalsClient:
        nc = await nats.connect(url, connect_timeout=reply_timeout)
        return cls(nc, workspace, reply_timeout)

    async def close(self) -> None:
        await self.nc.drain()

    async def send(self, verb: CommandVerb, body: msgspec.Struct | dict[str, Any]) -> AnyReply:
        """Send one command and decode its reply (``ok`` tells which fields are set)."""
        payload = body if isinstance(body, bytes) else encoder.encode(body)
        return await self.send_raw(verb, payload)

    async def send_raw(self, verb: CommandVerb, payload: bytes) -> AnyReply:
        msg = await self.nc.request(
            subjects.command(self.workspace, verb), payload, timeout=self.timeout
        )
        return reply_decoder.decode(msg.data)

    async def query(self, verb: str, body: msgspec.Struct | dict[str, Any]) -> bytes:
        """Send one query to the status projection; the reply's raw JSON."""
        msg = await self.nc.request(
            subjects.query(self.workspace, verb), encoder.encode(body), timeout=self.timeout
        )
        return msg.data

    async def events(
        self, approval_id: str = "*", *, follow: bool = False
    ) -> AsyncGenerator[tuple[int, AnyEvent]]:
        """The stored events of this workspace (or one approval) in stream order, with sequences.

        Without ``follow`` it stops at the last event the stream holds now.
        """
        js = self.nc.jetstream()
        filter_subject = subjects.events_of(self.workspace, approval_id)
        info = await js.stream_info(subjects.STREAM, subjects_filter=filter_subject)
        if not follow and not info.state.subjects:
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        subscription = await js.subscribe(
            filter_subject,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
            cb=queue.put,
        )
        try:
            while True:
                msg = await queue.get()
                yield msg.metadata.sequence.stream, event_decoder.decode(msg.data)
                if not follow and msg.metadata.num_pending == 0:
                    return
        finally:
            await subscription.unsubscribe()
