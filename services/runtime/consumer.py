"""Durable JetStream consumers for the services that act on events (spend caps, delivery).

A push consumer with a deliver group, so every instance of a service shares it; each message is
handled in its own task (at most ``concurrency`` at once) and acknowledged only when handled
(marked in progress meanwhile, so a slow one is not handed to another instance).
The handler returns None when the event is done, or a delay in seconds after which the server
hands it back (a timer kept by the server, so a restart loses none). ``Unavailable`` (a service
that did not answer) hands it back with a growing delay; anything else sets it aside (``term``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol, Self

from nats.errors import Error as NatsError
from nats.js import api

from approvals.schemas import subjects
from approvals.schemas.codec import encoder, event_decoder, reply_decoder
from approvals.schemas.upcasting import UnknownSchemaVersion
from approvals.services.runtime import bus, tracing
from approvals.services.runtime.bus import ensure_events_stream
from approvals.services.runtime.ops import CONSUMED, CONSUMER_LAG, lag_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from approvals.schemas.events import AnyEvent
    from approvals.services.runtime.settings import Settings

    Handler = Callable[[AnyEvent], Awaitable[float | None]]

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1, 2, 5, 10, 30)


class Unavailable(Exception):
    """A service did not answer, or answered that it could not: hand the message back."""


class Part(Protocol):
    consumers: EventConsumers

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class ConsumerService:
    """A consuming service on its own broker connection: ``async with Service(settings): ...``.
    A subclass says what runs on the connection (``build``)."""

    name = "consumer"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = bus.broker(settings, log)
        self.part: Part | None = None

    def build(self, nc: Client) -> Part:
        raise NotImplementedError

    async def start(self) -> None:
        await self.broker.start()
        self.part = self.build(self.broker.connection)
        await self.part.start()

    async def stop(self) -> None:
        if self.part is not None:
            await self.part.stop()
        await self.broker.stop()

    async def ready(self) -> bool:
        """Connected, and the server answers for its durable consumers (their lag)."""
        if self.part is None or not self.broker.connection.is_connected:
            return False
        await self.part.consumers.lags()
        return True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EventConsumers:
    """The durable consumers of one service, started and stopped together."""

    def __init__(self, nc: Client, *, concurrency: int = 64, ack_wait_s: float = 30.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.ack_wait_s = ack_wait_s
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        self.durables: list[str] = []

    async def consume(
        self, durable: str, kinds: tuple[str, ...], handle: Handler, *, max_ack_pending: int
    ) -> None:
        """Follow the events of ``kinds`` (event types) on the durable consumer ``durable``."""
        await ensure_events_stream(self.js)
        deliver = f"_approvals.deliver.{durable}"
        config = api.ConsumerConfig(
            durable_name=durable,
            deliver_subject=deliver,
            deliver_group=durable,
            filter_subjects=[f"approvals.events.*.*.{kind}" for kind in kinds],
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
        )

        async def on_message(msg: Msg) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(msg, durable, handle))
            self._tasks.add(task)
            task.add_done_callback(self._done)

        self._subscriptions.append(
            await self.nc.subscribe(deliver, queue=durable, cb=on_message,
                                    pending_msgs_limit=1_000_000)
        )  # fmt: skip
        # Create, or bring an existing consumer to this configuration (ack wait, filters).
        await self.js.add_consumer(subjects.STREAM, config)
        self.durables.append(durable)

    async def lags(self) -> dict[str, int]:
        """Every durable consumer's lag, as the server counts it (also set on the gauge)."""
        lags = {}
        for durable in self.durables:
            lags[durable] = lag_of(await self.js.consumer_info(subjects.STREAM, durable))
            CONSUMER_LAG.labels(durable).set(lags[durable])
        return lags

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _working(self, msg: Msg) -> None:
        """Tell the server, every half ack wait, that ``msg`` is still being handled: a handler
        waiting on a slow receiver must not see its event handed to another meanwhile (which
        would send the same thing again while the first send is still going)."""
        while True:
            await asyncio.sleep(self.ack_wait_s / 2)  # the heartbeat's pace, not a wait
            with contextlib.suppress(NatsError, TimeoutError):
                await msg.in_progress()

    async def _handle(self, msg: Msg, durable: str, handle: Handler) -> None:
        working = asyncio.create_task(self._working(msg)) if msg.reply else None
        try:
            if tracing.ENABLED:  # the handler's commands and calls continue the event's trace
                with tracing.consuming(msg.headers, msg.subject, durable, "approvals.consumers"):
                    await self._settle(msg, durable, handle)
            else:
                await self._settle(msg, durable, handle)
        finally:
            if working is not None:
                working.cancel()

    async def _settle(self, msg: Msg, durable: str, handle: Handler) -> None:
        try:
            delay = await handle(event_decoder.decode(msg.data))
            outcome = "done" if delay is None else "deferred"
        except (Unavailable, NatsError, TimeoutError) as error:
            # The service or the bus could not take it now (a server failing over, a stream
            # electing its leader): never set aside, try again with a growing pause.
            attempt = msg.metadata.num_delivered if msg.reply else 1
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1]
            log.warning("%s: %r; trying again in %ss", msg.subject, error, delay)
            outcome = "retried"
        except UnknownSchemaVersion as error:
            # Written by a newer service: neither guess nor set it aside; wait for an upgrade.
            delay = RETRY_DELAYS_S[-1]
            log.error("cannot read %s: %s", msg.subject, error)
            outcome = "retried"
        except Exception:
            log.exception("cannot handle %s; it is set aside", msg.subject)
            CONSUMED.labels(durable, "set_aside").inc()
            await msg.term()
            return
        CONSUMED.labels(durable, outcome).inc()
        try:
            if delay is None:
                await msg.ack()
            else:
                await msg.nak(delay=delay)
        except (NatsError, TimeoutError) as error:
            # Unanswered, the server delivers it again after the ack wait: handled twice at
            # worst, which every handler takes (it is idempotent).
            log.warning("acknowledging %s failed (%r)", msg.subject, error)


# Refusals that mean "already done" or "nothing to do": the event is finished.
FINAL_REFUSALS = frozenset(
    {"already_decided", "expired", "conflict", "not_found", "not_approved", "already_redeemed",
     "forbidden", "invalid"}
)  # fmt: skip


async def command(
    nc: Client,
    workspace_id: str,
    verb: subjects.CommandVerb,
    body: dict[str, Any],
    timeout_s: float = 5.0,
) -> dict[str, Any] | None:
    """Send a command; None when it was taken, the refusal's details when it is final, and
    Unavailable when nobody answered or the service could not take it now."""  # fmt: skip
    headers = (tracing.inject({}) or None) if tracing.ENABLED else None
    try:
        msg = await nc.request(subjects.command(workspace_id, verb), encoder.encode(body),
                               timeout=timeout_s, headers=headers)  # fmt: skip
    except (NatsError, TimeoutError) as error:
        raise Unavailable(f"{verb} {body.get('approval_id')} not answered ({error!r})") from None
    reply = reply_decoder.decode(msg.data)
    if reply.ok or reply.error is None:
        return None
    if reply.error.code not in FINAL_REFUSALS:
        raise Unavailable(f"{verb} {body.get('approval_id')} refused: {reply.error.message}")
    return {"code": reply.error.code, **reply.error.details}
