"""The projector: a durable JetStream pull consumer feeding the status view in batches.

Order matters, because the view's position is a single high-water mark: the consumer allows at
most one batch in flight (``max_ack_pending`` = batch size) and acknowledges a batch with one
``AckAll`` only after the view committed it. A batch that fails is negatively acknowledged and
comes back in order; one that committed but was not acknowledged (a crash) comes back and is
skipped by the view as already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import msgspec
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NotFoundError

from schemas.codec import event_decoder
from schemas.subjects import EVENTS_WILDCARD, NOTIFICATION_ID_HEADER, STREAM
from services.bus import ensure_events_stream

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from uuid import UUID

    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from projections.status.view import Projected, StatusView
    from schemas.queries import ApprovalView

log = logging.getLogger(__name__)

DURABLE = "status-projection"


class Projector:
    def __init__(
        self,
        view: StatusView,
        js: JetStreamContext,
        *,
        on_change: Callable[[dict[UUID, ApprovalView]], None] = lambda changed: None,
        durable: str = DURABLE,
        batch_size: int = 1000,
        ack_wait_s: float = 10.0,
        blocking_io: bool = False,
    ) -> None:
        self.view = view
        self.js = js
        self.on_change = on_change
        self.durable = durable
        self.batch_size = batch_size
        self.ack_wait_s = ack_wait_s
        self.blocking_io = blocking_io
        self._task: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        await ensure_events_stream(self.js)
        await self._ensure_consumer()
        self._subscription = await self.js.pull_subscribe_bind(self.durable, stream=STREAM)
        self._task = asyncio.create_task(self._run(self._subscription), name="status-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._subscription is not None:
            # Unacknowledged messages it holds go back to the consumer; a drain would wait on them.
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _ensure_consumer(self) -> None:
        try:
            await self.js.consumer_info(STREAM, self.durable)
        except NotFoundError:
            await self.js.add_consumer(
                STREAM,
                api.ConsumerConfig(
                    durable_name=self.durable,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.ALL,
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=self.batch_size,
                    filter_subject=EVENTS_WILDCARD,
                ),
            )

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(self.batch_size, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except NatsError as error:
                log.warning("fetch failed (%s); retrying", error)
                await asyncio.sleep(0.5)  # back off before asking the server again
                continue
            if messages:
                await self._handle(messages)

    async def _handle(self, messages: Sequence[Msg]) -> None:
        batch = decode_batch(messages)
        try:
            if self.blocking_io:
                changed = await asyncio.to_thread(self.view.project, batch)
            else:
                changed = self.view.project(batch)
        except Exception:
            log.exception("projecting %d events failed; they will be redelivered", len(batch))
            for message in messages:
                with contextlib.suppress(NatsError):
                    await message.nak(delay=1.0)
            return
        try:
            await messages[-1].ack()  # AckAll: acknowledges the whole batch
        except NatsError as error:
            # Committed but not acknowledged: the batch comes back and the view skips it.
            log.warning("acknowledging a projected batch failed (%s)", error)
        if changed:
            self.on_change(changed)


def decode_batch(messages: Sequence[Msg]) -> list[Projected]:
    """Events with their notification ids; a message that is not ours is logged and skipped."""
    batch: list[Projected] = []
    for message in messages:
        try:
            notification_id = int((message.headers or {})[NOTIFICATION_ID_HEADER])
            batch.append((notification_id, event_decoder.decode(message.data), message.data))
        except (KeyError, ValueError, msgspec.DecodeError) as error:
            log.error("skipping a message on %s that is not an event (%s)", message.subject, error)
    return batch
