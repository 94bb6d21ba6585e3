"""The relay: the store's notification log is the outbox, JetStream is where it goes.

It reads notifications in order after the last one the stream holds and publishes each event with
``Nats-Msg-Id = <approval_id>:<version>``, the notification id in a header, and
``Nats-Expected-Last-Sequence``: the stream stores a message only if it directly follows the one
before it, so the stream is the notification log in order, with no gap and no duplicate, even if a
publish fails half-way or a second relay runs. On any failure the relay re-reads its position from
the stream and carries on from there. A crash between commit and publish loses nothing: the next
start reads the position from the stream and publishes what is missing.

With a lease (``approvals.services.runtime.lease``), only the instance holding it publishes: any
number of command
service instances may run, and when the holder dies another takes over within the lease's
length, re-reading the position from the stream first. An instance that commits without the
lease tells the holder on ``approvals.relay.nudge`` (core NATS), so its events go out at once
rather than at the holder's next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.js import api

from approvals.schemas.codec import envelope_decoder
from approvals.schemas.subjects import MSG_ID_HEADER, NOTIFICATION_ID_HEADER, RELAY_NUDGE, STREAM
from approvals.services.approvals import traced
from approvals.services.approvals.publisher import PipelinedPublisher
from approvals.services.runtime import tracing
from approvals.services.runtime.bus import ensure_events_stream

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import Notification
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from opentelemetry.trace import Span

    from approvals.services.approvals.application import Approvals
    from approvals.services.runtime.lease import Lease

log = logging.getLogger(__name__)


class RelayInterrupted(Exception):
    """A publish was refused or not acknowledged in time: re-read the position and go on."""


class Relay:
    def __init__(
        self,
        app: Approvals,
        nc: Client,
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 1.0,
        ack_timeout_s: float = 10.0,
        lease: Lease | None = None,
        blocking_io: bool = False,
    ) -> None:
        self.app = app
        self.lease = lease
        self.blocking_io = blocking_io  # read the store in a thread (PostgreSQL)
        self.nc = nc
        self.js = nc.jetstream()
        self._nudges: Subscription | None = None
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.ack_timeout_s = ack_timeout_s
        self.published_up_to = 0  # last notification id the stream holds
        self._last_seq = 0  # the stream's last sequence
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one publishing pass at a time
        self._publisher = PipelinedPublisher(nc)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def nudge(self) -> None:
        """Tell the relay that new events were committed."""
        self._wake.set()

    async def start(self) -> None:
        await ensure_events_stream(self.js)
        await self._publisher.start()
        if self.lease is not None:
            self._nudges = await self.nc.subscribe(RELAY_NUDGE, cb=self._on_nudge)
            await self.lease.start()
        await self.resync()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="relay")

    async def stop(self) -> None:
        """Publish what is committed, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        # The flag as well as the cancellation: on Python 3.11 a cancellation that meets the
        # poll timeout's own expiry can come out as a TimeoutError, which the loop swallows.
        self._stopping = True
        self._wake.set()
        task.cancel()
        # asyncio.wait, not suppress(CancelledError): a cancellation of our caller must go on.
        await asyncio.wait({task})
        await self._drain()
        await self._publisher.stop()
        if self._nudges is not None:
            with contextlib.suppress(NatsError):
                await self._nudges.unsubscribe()
            self._nudges = None
        if self.lease is not None:
            await self.lease.stop()

    async def _drain(self) -> None:
        """Publish what is committed before stopping. Without the lease, wait (up to the lease's
        length and a half) until the holder has published it, or the lease (a dead holder's,
        aged out) comes here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (1.5 * self.lease.ttl_s if self.lease else 0.0)
        failures = 0
        while True:
            try:
                if self.publishing:
                    await self.publish_pending()
                    return
                await self.resync()
                if self.published_up_to >= self.app.last_notification_id():
                    return  # the holder published it all
            except (RelayInterrupted, NatsError, TimeoutError) as error:
                # A batch cut off by the cancellation leaves the position behind: re-read it.
                failures += 1
                log.warning("relay interrupted while stopping (%s); re-reading position", error)
                with contextlib.suppress(NatsError, TimeoutError):
                    await self.resync()
                if failures >= 3:
                    return
                continue
            if loop.time() > deadline:
                log.warning(
                    "relay stopping with events not on the stream yet: the instance that holds "
                    "the lease, or the next to start, publishes them"
                )
                return
            await asyncio.sleep(0.2)

    @property
    def publishing(self) -> bool:
        """Whether this instance is the one that publishes (it holds the lease, or has none)."""
        return self.lease is None or self.lease.held.is_set()

    async def resync(self) -> None:
        """Read the position from the stream: its last sequence and that message's notification.

        A stream that is gone stays gone until an operator creates it again (`approvals bus
        setup`; never automatically: during a cluster's recovery a stream is briefly "not found",
        and a second one made then would split the log); the relay then publishes the whole log
        into it from the store."""
        info = await self.js.stream_info(STREAM)
        self._last_seq = info.state.last_seq
        if info.state.messages == 0:
            self.published_up_to = 0
            return
        last = await self.js.get_msg(STREAM, seq=self._last_seq)
        self.published_up_to = int((last.headers or {})[NOTIFICATION_ID_HEADER])

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if not self.publishing:
                await self._follow()
                continue
            try:
                await self.publish_pending()
            except (RelayInterrupted, NatsError, TimeoutError) as error:
                log.warning("relay interrupted (%s); re-reading position from the stream", error)
                await self._recover()
                continue
            except Exception:
                log.exception("relay failed; re-reading position from the stream")
                await self._recover()
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives as the nudge completes the wait, and then stop() waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()

    async def _on_nudge(self, msg: Msg) -> None:
        if self.publishing:
            self._wake.set()

    async def _follow(self) -> None:
        """Wait while another instance holds the lease, telling it when this one committed;
        once this one takes the lease, read the position from the stream (the other published
        up to there)."""
        assert self.lease is not None
        held, woken = self.lease.held.wait(), self._wake.wait()
        waits = {asyncio.ensure_future(held), asyncio.ensure_future(woken)}
        try:
            await asyncio.wait(waits, timeout=self.poll_interval_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._wake.is_set() and not self.publishing:
            self._wake.clear()
            with contextlib.suppress(NatsError):
                await self.nc.publish(RELAY_NUDGE)
        if self.publishing:
            log.info("relay: this instance publishes from now on")
            with contextlib.suppress(NatsError, TimeoutError):
                await self.resync()

    async def _recover(self) -> None:
        await asyncio.sleep(0.2)  # back off before retrying against the server
        with contextlib.suppress(NatsError, TimeoutError):
            await self.resync()

    async def publish_pending(self) -> int:
        """Publish every committed event the stream does not hold yet; return how many."""
        published = 0
        async with self._lock:
            while True:
                start = self.published_up_to + 1
                if self.blocking_io:
                    notifications = await asyncio.to_thread(
                        self.app.notifications, start, self.batch_size
                    )
                else:
                    notifications = self.app.notifications(start, self.batch_size)
                if not notifications:
                    return published
                await self._publish(notifications)
                published += len(notifications)

    async def _publish(self, notifications: Sequence[Notification]) -> None:
        futures = []
        spans: list[Span | None] = []  # tracing on: each publish's span, ended once acknowledged
        expected = self._last_seq
        for notification in notifications:
            envelope = envelope_decoder.decode(notification.state)
            approval_id = str(notification.originator_id)
            headers = {
                MSG_ID_HEADER: f"{approval_id}:{notification.originator_version}",
                NOTIFICATION_ID_HEADER: str(notification.id),
                api.Header.EXPECTED_LAST_SEQUENCE.value: str(expected),
            }
            subject = f"approvals.events.{envelope.workspace_id}.{approval_id}.{envelope.type}"
            if tracing.ENABLED:
                spans.append(traced.publishing(notification, subject, headers))
            futures.append(await self._publisher.publish(subject, notification.state, headers))
            expected += 1
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                acks = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            self._publisher.cancel_pending()
            raise RelayInterrupted("acknowledgements timed out") from None
        finally:
            for span in spans:
                if span is not None:
                    span.end()
        for notification, ack in zip(notifications, acks, strict=True):
            if isinstance(ack, BaseException):
                raise RelayInterrupted(str(ack)) from ack
            self._last_seq = ack
            self.published_up_to = notification.id
