"""The bus: how a process authenticates to it, and the JetStream streams the events travel on."""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

from faststream.nats import NatsBroker
from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsUserPassword,
    parse_security,
)
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError

from approvals.schemas.subjects import (
    CHECKPOINT_STREAM,
    CHECKPOINTS,
    EVENTS_WILDCARD,
    NOTIFICATION_ID_HEADER,
    STREAM,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable

    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from approvals.services.runtime.settings import Settings

DUPLICATE_WINDOW_S = 120.0


def broker(settings: Settings, logger: logging.Logger) -> NatsBroker:
    """A service's broker: every server of NATS_URL, its own credentials, reconnecting for ever."""
    return NatsBroker(
        settings.nats_servers, logger=logger, max_reconnect_attempts=-1,
        security=security(settings),
    )  # fmt: skip


def security(settings: Settings) -> NatsSecurity | None:
    """The credentials and TLS the settings name (faststream's form; see ``connect_options``)."""
    context = None
    if settings.nats_tls_ca or settings.nats_tls_cert:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
        if settings.nats_tls_cert:
            key = settings.nats_tls_key
            context.load_cert_chain(str(settings.nats_tls_cert), str(key) if key else None)
    if settings.nats_creds:
        return NatsCredentials(str(settings.nats_creds), ssl_context=context)
    if settings.nats_nkey_seed:
        return NatsNKey(settings.nats_nkey_seed, ssl_context=context)
    if settings.nats_user:
        return NatsUserPassword(settings.nats_user, settings.nats_password or "",
                                ssl_context=context)  # fmt: skip
    if context is not None:
        return NatsSecurity(ssl_context=context)
    return None


def connect_options(settings: Settings) -> dict[str, Any]:
    """The same, and the inbox prefix, as nats-py's ``connect`` keyword arguments."""
    found = security(settings)
    options = {k: v for k, v in parse_security(found).items() if v is not None} if found else {}
    if settings.nats_inbox_prefix:
        options["inbox_prefix"] = settings.nats_inbox_prefix
    return options


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


async def last_position(js: JetStreamContext) -> int:
    """The store position (notification id) of the last event on the stream; 0 when empty.

    Not its sequence: the store's ids have gaps (an insert rolled back after losing a race
    still used its id), the stream's sequences do not, so only positions compare with positions.
    """
    info = await js.stream_info(STREAM)
    if info.state.messages == 0:
        return 0
    last = await js.get_msg(STREAM, seq=info.state.last_seq)
    return int((last.headers or {})[NOTIFICATION_ID_HEADER])


# The key-value buckets the services keep, by name: (age limit in seconds or None, history).
# Created by whoever needs one first (one replica) or by `approvals bus setup --replicas N`.
KV_BUCKETS: dict[str, tuple[float | None, int]] = {
    "approvals_leases": (10.0, 1),  # the relay's lease (services/lease.py): its length
    "approvals_deliveries": (None, 1),  # what each channel was sent (services/delivery)
    "approvals_review_leases": (120.0, 1),  # reviews held for a reviewer (services/reviews.py)
    "approvals_sign_in_links": (1800.0, 1),  # one-time sign-in links used (gateway)
    "approvals_confirm_links": (None, 1),  # email confirmation links used (gateway)
}


def kv_config(bucket: str, replicas: int = 1, ttl: float | None = None) -> api.KeyValueConfig:
    default_ttl, history = KV_BUCKETS[bucket]
    return api.KeyValueConfig(bucket=bucket, ttl=ttl or default_ttl, history=history,
                              replicas=replicas)  # fmt: skip


async def ensure_kv(js: JetStreamContext, bucket: str, *, ttl: float | None = None) -> KeyValue:
    """The bucket as it is; created (one replica; ``ttl`` its age limit if given) if missing."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(kv_config(bucket, ttl=ttl))


async def setup(js: JetStreamContext, replicas: int) -> list[tuple[str, str]]:
    """Every stream and bucket, created with ``replicas`` or brought to it: (name, what
    was done). Buckets are created by nats-py's own ``create_key_value``."""
    wanted: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        (str(c.name), functools.partial(js.add_stream, c))
        for c in (events_stream_config(replicas), checkpoint_stream_config(replicas))
    ] + [
        (f"KV_{bucket}", functools.partial(js.create_key_value, kv_config(bucket, replicas)))
        for bucket in KV_BUCKETS
    ]  # fmt: skip
    done: list[tuple[str, str]] = []
    for name, create in wanted:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await create()
            done.append((name, f"created with {replicas} replicas"))
            continue
        if info.config.num_replicas == replicas:
            done.append((name, f"kept ({replicas} replicas)"))
            continue
        await js.update_stream(info.config.evolve(num_replicas=replicas))
        done.append((name, f"{info.config.num_replicas} -> {replicas} replicas"))
    return done
