"""Reading the event stream with only what a workspace caller may do on the bus.

deploy/nats/auth.conf lets a caller create a consumer on ``APPROVALS_EVENTS`` by name, filtered to
its own workspace (``$JS.API.CONSUMER.CREATE.APPROVALS_EVENTS.*.approvals.events.<ws>.>``), and
receive on its own inbox; nothing else: no stream info, no stream lookup by subject, no acks, no
flow-control replies. nats-py's ordered consumer needs all four, so this one is built by hand: a
push consumer with a fresh name, no acknowledgements, its pending count from the create reply
(so an empty filter ends at once), and a new consumer from the next sequence if a delivery is
ever missed (the ordered consumer's guarantee: each event once, in stream order).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from nats import nuid
from nats.errors import Error as NatsError
from nats.js import api

from approvals.schemas.subjects import STREAM

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from approvals.client.refusals import Refusals

IDLE_S = 30.0  # the server removes a reader's consumer this long after its reader went away
_names = nuid.NUID()


def create_subject(name: str, filter_subject: str) -> str:
    """The API subject a consumer named ``name`` on ``filter_subject`` is created with."""
    return f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.{filter_subject}"


async def event_messages(
    nc: Client,
    filter_subject: str,
    *,
    follow: bool = False,
    start: int = 1,
    refusals: Refusals | None = None,
) -> AsyncGenerator[Msg]:
    """The stream's messages on ``filter_subject`` in stream order, each once, from stream
    sequence ``start`` on (the first of the stream by default).

    Without ``follow`` it ends after the last one the stream holds when it starts reading.
    ``refusals``: told the subjects used, so a refusal names them as they are spelled.
    """
    js = nc.jetstream()
    start = max(start, 1)
    while True:
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox, cb=queue.put, pending_msgs_limit=1_000_000)
        try:
            name = _names.next().decode()
            if refusals is not None:
                refusals.expect(create_subject(name, filter_subject))
            info = await js.add_consumer(STREAM, api.ConsumerConfig(
                name=name, filter_subject=filter_subject, deliver_subject=inbox,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                ack_policy=api.AckPolicy.NONE, inactive_threshold=IDLE_S, num_replicas=1,
                mem_storage=True,
            ))  # fmt: skip
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if not follow and not info.num_pending and not delivered:
                return  # nothing to read (none pending, and none sent before the reply)
            expected = 1
            while True:
                msg = await queue.get()
                meta = msg.metadata
                if meta.sequence.consumer != expected:
                    break  # one was lost on the way: read again after the last one yielded
                expected += 1
                start = meta.sequence.stream + 1
                yield msg
                if not follow and meta.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()
