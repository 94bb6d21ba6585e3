"""The JetStream stream the events travel on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js import api
from nats.js.errors import NotFoundError

from schemas.subjects import CHECKPOINT_STREAM, CHECKPOINTS, EVENTS_WILDCARD, STREAM

if TYPE_CHECKING:
    from nats.js import JetStreamContext

DUPLICATE_WINDOW_S = 120.0


def stream_config(name: str, subjects: list[str], replicas: int = 1) -> api.StreamConfig:
    """Our streams: file storage, kept by limits (nothing discarded by default), a duplicate
    window for ``Nats-Msg-Id``, direct gets allowed."""
    return api.StreamConfig(
        name=name,
        subjects=subjects,
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        allow_direct=True,
    )


def events_stream_config(replicas: int = 1) -> api.StreamConfig:
    return stream_config(STREAM, [EVENTS_WILDCARD], replicas)


def checkpoint_stream_config(replicas: int = 1) -> api.StreamConfig:
    """Signed checkpoints of the log, kept for as long as the stream lives."""
    return stream_config(CHECKPOINT_STREAM, [CHECKPOINTS], replicas)


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> api.StreamInfo:
    """Create the stream if it is missing; leave an existing one as it is."""
    assert config.name is not None
    try:
        return await js.stream_info(config.name)
    except NotFoundError:
        return await js.add_stream(config)


async def ensure_events_stream(js: JetStreamContext) -> api.StreamInfo:
    return await ensure_stream(js, events_stream_config())


async def ensure_checkpoint_stream(js: JetStreamContext) -> api.StreamInfo:
    return await ensure_stream(js, checkpoint_stream_config())
