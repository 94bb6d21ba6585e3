"""The projector: a durable JetStream push consumer feeding the status view in batches.

The view's position is a high-water mark, so events must reach it in stream order, each once. The
server does not promise that by itself: after a restart it pushes new messages at once while the
ones delivered to the dead process come back only when their ``ack_wait`` runs out. So the
projector puts messages back in order by stream sequence: it accepts the next expected sequence,
holds later ones until the gap fills, and drops what it has already accepted (a redelivery).

What arrives while a batch is being written forms the next batch: one view transaction (rows and
position together). A committed batch is visible at once, so its waiters are woken then; it is
made durable (``StatusView.sync``: on SQLite the fsync of the write-ahead log) and acknowledged by
one ``AckAll`` in a task of its own, while the next batch is written: one fsync covers every batch
committed before it began, and no batch is acknowledged before that. A batch that fails is retried
in place with a growing pause, never handed back, so nothing can overtake it; one that committed
but was not acknowledged (a crash) comes back and the view skips it as already applied.

(A push consumer: nats-py's pull ``fetch`` costs a timed queue read per message, over a hundred
microseconds each on this machine, more than the whole budget of the projection.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import NotFoundError

from approvals.projections.status.bulk import BulkWriter, decode_stored, project_in_bulk
from approvals.schemas.codec import event_decoder
from approvals.schemas.subjects import EVENTS_WILDCARD, NOTIFICATION_ID_HEADER, STREAM
from approvals.services.runtime import tracing
from approvals.services.runtime.bus import ensure_events_stream

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from uuid import UUID

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from approvals.projections.status.view import Projected, StatusView

log = logging.getLogger(__name__)

# An accepted message and its event, decoded on arrival (None: it did not decode then).
Received = tuple["Msg", "Projected | None"]

DURABLE = "status-projection"
MAX_RETRY_PAUSE_S = 30.0


class Projector:
    def __init__(
        self,
        view: StatusView,
        nc: Client,
        *,
        on_change: Callable[[Collection[UUID]], None] = lambda changed: None,
        durable: str = DURABLE,
        bulk: BulkWriter | None = None,
        batch_size: int = 4000,
        ack_wait_s: float = 10.0,
    ) -> None:
        self.view = view
        self.nc = nc
        self.js = nc.jetstream()
        self.on_change = on_change
        self.bulk = bulk  # big batches written by a process of their own (SQLite)
        self.durable = durable
        self.batch_size = batch_size
        self.ack_wait_s = ack_wait_s
        self.retry_pause_s = 0.5
        self._next_seq: int | None = None  # the stream sequence to accept next
        self._held: dict[int, Msg] = {}  # arrived ahead of a gap, by stream sequence
        self._gap_since: float | None = None
        self._received: list[Received] = []  # accepted, in order, not yet written
        self._arrived = asyncio.Event()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[Any] | None = None  # a batch in its thread
        self._committed: Msg | None = None  # the last message of the last batch committed
        self._to_sync = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._syncing: asyncio.Future[Any] | None = None  # an fsync in its thread
        self._stopping = False

    @property
    def max_ack_pending(self) -> int:
        """Two batches: the server pushes the next while one is written and made durable."""
        return 2 * self.batch_size

    @property
    def deliver_subject(self) -> str:
        return f"_approvals.deliver.{self.durable}"

    async def start(self) -> None:
        # Listen before the consumer exists: what it pushes at once must find a subscriber.
        self._subscription = await self.nc.subscribe(
            self.deliver_subject, cb=self._on_message, pending_msgs_limit=4 * self.batch_size
        )
        stream = await ensure_events_stream(self.js)
        consumer = await self._ensure_consumer()
        acked = consumer.ack_floor.stream_seq if consumer.ack_floor is not None else 0
        self._next_seq = max(acked + 1, stream.state.first_seq)
        self._release_held()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="status-projector")
        self._syncer = asyncio.create_task(self._sync_and_ack(), name="status-projector-sync")

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._task is not None:
            # The flag as well: on Python 3.11 a cancellation that meets the timeout's own
            # expiry can come out as a TimeoutError, which the loop would take for a quiet spell.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writing is not None:
            # A batch the cancellation cut off is still being written in its thread or worker.
            await asyncio.wait({self._writing})
            self._writing = None
        if self.bulk is not None:
            await self.bulk.close()
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
            self._syncer = None
        if self._syncing is not None:
            await asyncio.wait({self._syncing})
            self._syncing = None
        # What is committed but not acknowledged comes back on the next start and is skipped.

    async def _ensure_consumer(self) -> api.ConsumerInfo:
        info: api.ConsumerInfo | None
        try:
            info = await self.js.consumer_info(STREAM, self.durable)
        except NotFoundError:
            info = None
        pushes_here = info is not None and info.config.deliver_subject == self.deliver_subject
        if info is not None and pushes_here:
            if info.config.max_ack_pending == self.max_ack_pending:
                return info
            # An older release's consumer (one batch in flight): the same consumer, updated.
        elif info is not None:
            # A consumer of another shape (an older pull consumer). Replacing it loses nothing:
            # the view knows its own position and skips what it already has.
            log.warning(
                "replacing consumer %s, which does not push to this projector", self.durable
            )
            await self.js.delete_consumer(STREAM, self.durable)
        created: api.ConsumerInfo = await self.js.add_consumer(
            STREAM,
            api.ConsumerConfig(
                durable_name=self.durable,
                deliver_subject=self.deliver_subject,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_ack_pending=self.max_ack_pending,
                filter_subject=EVENTS_WILDCARD,
            ),
        )
        return created

    async def _on_message(self, msg: Msg) -> None:
        seq = stream_sequence(msg)
        if self._next_seq is None or seq > self._next_seq:
            self._held[seq] = msg
            if self._gap_since is None:
                self._gap_since = time.monotonic()
            return
        if seq < self._next_seq:
            return  # accepted before: a redelivery
        self._accept(msg, seq)
        if self._held:
            self._release_held()

    def _accept(self, msg: Msg, seq: int) -> None:
        # Decoded now, on the loop while the batch before is written in its thread (sqlite3
        # lets go of the interpreter lock while SQLite works), not between batches; with a
        # worker process, which decodes what it writes, when the batch is written if small.
        self._received.append((msg, None if self.bulk is not None else decode_early(msg)))
        self._next_seq = seq + 1
        self._arrived.set()

    def _release_held(self) -> None:
        while self._next_seq in self._held:
            seq = self._next_seq
            self._accept(self._held.pop(seq), seq)
        self._held = {seq: msg for seq, msg in self._held.items() if seq > (self._next_seq or 0)}
        self._gap_since = time.monotonic() if self._held else None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(self.ack_wait_s):
                    await self._arrived.wait()
            except TimeoutError:
                await self._check_gap()
                continue
            self._arrived.clear()
            while self._received:
                batch = self._received[: self.batch_size]
                self._received = self._received[self.batch_size :]
                await (self._traced_write(batch) if tracing.ENABLED else self._write(batch))

    async def _check_gap(self) -> None:
        """A gap that outlives two ``ack_wait`` periods is a message deleted from the stream."""
        if self._gap_since is None or self._next_seq is None:
            return
        if time.monotonic() - self._gap_since < 2 * self.ack_wait_s:
            return
        try:
            await self.js.get_msg(STREAM, seq=self._next_seq)
        except NotFoundError:
            log.error("stream sequence %d is gone from %s; skipping it", self._next_seq, STREAM)
            self._next_seq += 1
            self._release_held()
        except NatsError as error:
            log.warning("looking up stream sequence %d failed (%s)", self._next_seq, error)

    async def _traced_write(self, received: Sequence[Received]) -> None:
        """``_write`` in a span: a child of the one event's publish, or linked to each."""
        batch = [(m.subject, m.headers) for m, _ in received]
        span = tracing.batch_span(self.durable, "approvals.projection", batch)
        try:
            await self._write(received)
        finally:
            if span is not None:
                span.end()

    async def _write(self, received: Sequence[Received]) -> None:
        pause = self.retry_pause_s
        batch = [event for _, event in received if event is not None]
        while True:
            try:
                if self.bulk is not None and len(received) > self.view.small_batch:
                    # Decoded and written by the worker process: the loop only receives.
                    stored = stored_events([message for message, _ in received])
                    self._writing = asyncio.ensure_future(self.bulk.project(stored))
                    changed: Collection[UUID] = await asyncio.shield(self._writing)
                    break
                if len(batch) < len(received):
                    # Not decoded on arrival, or some did not decode: now, the way that tells
                    # which and why. An event of a newer schema version stops the view here
                    # (UnknownSchemaVersion) until the service is upgraded: skipping it would
                    # leave the view wrong for ever.
                    batch = decode_batch([message for message, _ in received])
                if len(batch) <= self.view.small_batch:
                    # A few events on a view that commits without waiting for the disk: on the
                    # loop (a thread would wait for the GIL longer than the write takes).
                    changed = self.view.project(batch)
                    break
                # A thread: the next batch arrives while this one is written. Shielded, and
                # awaited by stop(): a cancelled await would leave the thread writing on a
                # connection the service is about to close.
                write = asyncio.to_thread(project_in_bulk, self.view, batch)
                self._writing = asyncio.ensure_future(write)
                changed = await asyncio.shield(self._writing)
                break
            except Exception:
                count = len(received)
                log.exception("projecting %d events failed; retrying in %.1fs", count, pause)
                await asyncio.sleep(pause)  # back off: the view's database is in trouble
                pause = min(2 * pause, MAX_RETRY_PAUSE_S)
        # Committed and visible: the waiters read it now, while it is made durable.
        if changed:
            self.on_change(changed)
        self._committed = received[-1][0]
        self._to_sync.set()

    async def _sync_and_ack(self) -> None:
        """Make the committed batches durable, then acknowledge them with one ``AckAll``."""
        while True:
            await self._to_sync.wait()
            self._to_sync.clear()
            last = self._committed  # committed before the fsync starts: covered by it
            if last is None:
                continue
            pause = self.retry_pause_s
            while True:
                try:
                    self._syncing = asyncio.ensure_future(asyncio.to_thread(self.view.sync))
                    await asyncio.shield(self._syncing)
                    break
                except Exception:
                    log.exception("making the view durable failed; retrying in %.1fs", pause)
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, MAX_RETRY_PAUSE_S)
            try:
                await last.ack()  # AckAll: acknowledges every batch up to this one
            except NatsError as error:
                # Committed but not acknowledged: the batches come back and the view skips them.
                log.warning("acknowledging projected batches failed (%s)", error)


def stream_sequence(msg: Msg) -> int:
    """The message's stream sequence, read from its reply subject.

    ``msg.metadata`` parses every field of the subject into a dataclass (a datetime among
    them): a tenth of the loop's time per message while the projector catches up, for one
    number. The subject without a domain is ``$JS.ACK.<stream>.<consumer>.<delivered>.
    <stream seq>.<consumer seq>.<timestamp>.<pending>``; any other form goes through nats-py.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == _PLAIN_ACK_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[5])
    return msg.metadata.sequence.stream


_PLAIN_ACK_TOKENS = 9


def decode_early(message: Msg) -> Projected | None:
    """The message's event, or None when it does not decode, whatever the reason: the write
    decodes its batch again then, where a failure is logged and skipped or retried as always
    (raising here, in nats-py's callback, would lose the message from the sequence)."""
    try:
        notification_id = int((message.headers or {})[NOTIFICATION_ID_HEADER])
        return notification_id, event_decoder.decode(message.data), message.data
    except Exception:
        return None


def stored_events(messages: Sequence[Msg]) -> list[tuple[int, bytes]]:
    """Notification ids and stored JSON (for the worker, or ``decode_stored``); a message
    without the id is logged and skipped."""
    stored: list[tuple[int, bytes]] = []
    for message in messages:
        try:
            stored.append((int((message.headers or {})[NOTIFICATION_ID_HEADER]), message.data))
        except (KeyError, ValueError) as error:
            log.error("skipping a message on %s that is not an event (%s)", message.subject, error)
    return stored


def decode_batch(messages: Sequence[Msg]) -> list[Projected]:
    """Events with their notification ids; a message that is not ours is logged and skipped."""
    return decode_stored(stored_events(messages))
