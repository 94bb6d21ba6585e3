"""Reading the signed checkpoints back, for an auditor: every one the stream holds, and which of
them a trusted key signed. The command service's checkpointer
(``services/approvals/checkpointer.py``) writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import NotFoundError

from approvals.schemas.signatures import ReceiptInvalid, check_signature
from approvals.schemas.subjects import CHECKPOINT_STREAM, CHECKPOINTS
from approvals.services.approvals.checkpointer import checkpoint_decoder

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from approvals.schemas.audit import Checkpoint
    from approvals.schemas.receipts import PublicKey


async def all_checkpoints(nc: Client) -> list[Checkpoint]:
    """Every checkpoint the stream holds, oldest first."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(CHECKPOINT_STREAM)
    except NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    found: list[Checkpoint] = []
    done = asyncio.Event()

    async def put(msg: Msg) -> None:
        found.append(checkpoint_decoder.decode(msg.data))
        if msg.metadata.num_pending == 0:
            done.set()

    subscription = await js.subscribe(CHECKPOINTS, ordered_consumer=True, cb=put,
                                      deliver_policy=api.DeliverPolicy.ALL)  # fmt: skip
    try:
        await done.wait()
    finally:
        with contextlib.suppress(NatsError):
            await subscription.unsubscribe()
    return found


def check_checkpoints(
    checkpoints: list[Checkpoint], keys: list[PublicKey]
) -> tuple[list[Checkpoint], list[tuple[Checkpoint, str]]]:
    """The checkpoints signed by one of ``keys``, and the others with the reason."""
    good: list[Checkpoint] = []
    bad: list[tuple[Checkpoint, str]] = []
    for checkpoint in checkpoints:
        try:
            check_signature(checkpoint.body(), checkpoint.key_id, checkpoint.signature, keys,
                            "checkpoint")  # fmt: skip
            good.append(checkpoint)
        except ReceiptInvalid as invalid:
            bad.append((checkpoint, str(invalid)))
    return good, bad
