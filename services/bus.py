"""The JetStream stream the events travel on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js import api
from nats.js.errors import NotFoundError

from schemas.subjects import CHECKPOINT_STREAM, CHECKPOINTS, EVENTS_WILDCARD, STREAM

if TYPE_CHECKING:
    from nats.js import JetStreamContext

DUPLICATE_WINDOW_S = 120.0


def events_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        name=STREAM,
        subjects=[EVENTS_WILDCARD],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        allow_direct=True,
    )


async def ensure_events_stream(js: JetStreamContext) -> api.StreamInfo:
    """Create the events stream if it is missing; leave an existing one as it is."""
    try:
        return await js.stream_info(STREAM)
    except NotFoundError:
        return await js.add_stream(events_stream_config())


def checkpoint_stream_config(replicas: int = 1) -> api.StreamConfig:
    """Signed checkpoints of the log, kept for as long as the stream lives (never discarded)."""
    return api.StreamConfig(
        name=CHECKPOINT_STREAM,
        subjects=[CHECKPOINTS],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        allow_direct=True,
    )


async def ensure_checkpoint_stream(js: JetStreamContext) -> api.StreamInfo:
    try:
        return await js.stream_info(CHECKPOINT_STREAM)
    except NotFoundError:
        return await js.add_stream(checkpoint_stream_config())
