"""Signed checkpoints: the command service seals the whole log at intervals.

Every ``interval_s`` (when the log has grown) it folds the new events into the log hash
(``schemas/chain.py``), signs position, event count and hash with its Ed25519 key and publishes
the checkpoint on ``approvals.audit.checkpoints`` (stream ``APPROVALS_CHECKPOINTS``,
``Nats-Msg-Id = checkpoint:<position>``, so two instances never store one position twice). A
restart carries on from the last checkpoint it signed itself; a store changed behind its back is
then caught by ``approvals audit verify``, not folded into a new truth.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from approvals.schemas import chain
from approvals.schemas.audit import Checkpoint, CheckpointBody
from approvals.schemas.codec import canonical_encoder, encoder
from approvals.schemas.signatures import ReceiptInvalid, check_signature
from approvals.schemas.subjects import CHECKPOINT_STREAM, CHECKPOINTS, MSG_ID_HEADER
from approvals.services.approvals.notification_log import store_sections
from approvals.services.runtime.bus import ensure_checkpoint_stream

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.receipts import Signer
    from approvals.services.runtime.lease import Lease

log = logging.getLogger(__name__)
checkpoint_decoder = msgspec.json.Decoder(Checkpoint)


class LogHash:
    """The log hash and event count up to a position, advanced a section at a time."""

    def __init__(self, position: int = 0, events: int = 0, log_hash: str = chain.GENESIS) -> None:
        self.position, self.events, self.log_hash = position, events, log_hash

    def advance(self, app: Approvals, up_to: int) -> None:
        decode, encode, fold = msgspec.json.decode, canonical_encoder.encode, chain.fold
        log_hash, events = self.log_hash, self.events
        for section in store_sections(app, after=self.position, up_to=up_to):
            for record in section:
                raw = decode(record.state)
                stored = raw.pop("hash", "")
                log_hash = fold(log_hash, stored, encode(raw))
            events += len(section)
            self.position = section[-1].id
            self.log_hash, self.events = log_hash, events


class Checkpointer:
    def __init__(
        self,
        app: Approvals,
        nc: Client,
        signer: Signer,
        interval_s: float,
        *,
        lease: Lease | None = None,
    ) -> None:
        self.app = app
        self.lease = lease  # with several instances, the relay's: its holder seals
        self.js = nc.jetstream()
        self.signer = signer
        self.interval_s = interval_s
        self.sealed = LogHash()
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[None] | None = None

    async def start(self) -> None:
        await ensure_checkpoint_stream(self.js)
        last = await last_checkpoint(self.js)
        if last is not None:
            try:
                check_signature(last.body(), last.key_id, last.signature,
                                [self.signer.public_key()], "checkpoint")  # fmt: skip
                self.sealed = LogHash(last.position, last.events, last.log_hash)
            except ReceiptInvalid:
                log.warning("the last checkpoint is not signed by this service's key: "
                            "sealing the log again from its start")  # fmt: skip
        self._task = asyncio.create_task(self._run(), name="checkpoints")

    async def stop(self) -> None:
        """Stop, sealing what was written since the last checkpoint."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if self._reading is not None:
            await asyncio.wait({self._reading})
        try:
            async with asyncio.timeout(10):
                await self.checkpoint()
        except (NatsError, TimeoutError) as error:
            log.warning("the last checkpoint was not published (%s)", error)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.checkpoint()
            except (NatsError, TimeoutError) as error:
                log.warning("publishing a checkpoint failed (%s); trying again later", error)
            except Exception:
                log.exception("sealing the log failed; trying again later")

    async def checkpoint(self) -> Checkpoint | None:
        """Seal the log up to its last event now, if it grew; the checkpoint published."""
        if self.lease is not None and not self.lease.held.is_set():
            return None
        head = self.app.last_notification_id()
        if head <= self.sealed.position:
            return None
        advanced = LogHash(self.sealed.position, self.sealed.events, self.sealed.log_hash)
        # Shielded, and awaited by stop(): the thread reads the store, which closes after.
        self._reading = asyncio.ensure_future(asyncio.to_thread(advanced.advance, self.app, head))
        await asyncio.shield(self._reading)
        body = CheckpointBody(key_id=self.signer.key_id, position=advanced.position,
                              events=advanced.events, log_hash=advanced.log_hash,
                              at=datetime.now(UTC))  # fmt: skip
        signed = Checkpoint(**msgspec.structs.asdict(body), signature=self.signer.signature(body))
        await self.js.publish(CHECKPOINTS, encoder.encode(signed),
                              headers={MSG_ID_HEADER: f"checkpoint:{signed.position}"})  # fmt: skip
        self.sealed = advanced
        return signed


async def last_checkpoint(js: JetStreamContext) -> Checkpoint | None:
    try:
        msg = await js.get_last_msg(CHECKPOINT_STREAM, CHECKPOINTS)
    except NotFoundError:
        return None
    return checkpoint_decoder.decode(msg.data or b"")
