"""Build a fresh status view from the event store's notification log or from the stream.

Both sources hold the same events in the same order, so both builds, and the live projection
once it has caught up, have the same content hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.js import api

from approvals.projections.status.bulk import project_in_bulk
from approvals.projections.status.projector import decode_batch
from approvals.schemas.codec import event_decoder
from approvals.schemas.subjects import EVENTS_WILDCARD, STREAM

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from approvals.projections.status.view import StatusView
    from approvals.services.approvals.application import Approvals

# (how far, how far in all): store positions, or stream sequences. Not event counts: the
# store's positions have gaps (a rolled-back insert still used its id).
Progress = Callable[[int, int], None]

CHUNK = 5000


def from_store(app: Approvals, view: StatusView, progress: Progress | None = None) -> int:
    """Project every stored event after the view's position; return how many were applied."""
    total = app.last_notification_id()
    done = 0
    start = view.position() + 1
    while True:
        notifications = app.notifications(start, CHUNK)
        if not notifications:
            return done
        project_in_bulk(
            view, [(n.id, event_decoder.decode(n.state), n.state) for n in notifications]
        )
        view.sync()  # durable, and the log checkpointed as it grows
        done += len(notifications)
        start = notifications[-1].id + 1
        if progress is not None:
            progress(notifications[-1].id, total)


async def from_stream(
    js: JetStreamContext, view: StatusView, progress: Progress | None = None
) -> int:
    """Project every event the stream holds now, read with an ephemeral ordered pull."""
    info = await js.stream_info(STREAM)
    last_seq = info.state.last_seq
    if info.state.messages == 0:
        return 0
    subscription = await js.pull_subscribe(
        EVENTS_WILDCARD,
        stream=STREAM,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
        ),
    )
    done = 0
    try:
        while True:
            messages = await subscription.fetch(CHUNK, timeout=5.0)
            batch = decode_batch(messages)
            await asyncio.to_thread(project_in_bulk, view, batch)
            await asyncio.to_thread(view.sync)
            done += len(messages)
            seq = messages[-1].metadata.sequence.stream
            if progress is not None:
                progress(seq, last_seq)
            if seq >= last_seq:
                return done
    finally:
        await subscription.unsubscribe()
