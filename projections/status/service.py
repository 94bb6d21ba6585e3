"""The status projection service: projector, query handlers and the expiry scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from approvals.projections.status.handlers import QueryHandlers
from approvals.projections.status.projector import Projector
from approvals.projections.status.schedulers.expiry import ExpiryScheduler
from approvals.projections.status.schedulers.reminders import ReminderScheduler
from approvals.projections.status.storage import open_view
from approvals.projections.status.waiters import Waiters
from approvals.schemas.subjects import STREAM
from approvals.services.runtime import bus
from approvals.services.runtime.lease import Lease
from approvals.services.runtime.ops import (
    CONSUMER_LAG,
    OLDEST_PENDING,
    PENDING,
    PROJECTION_LAG,
    lag_of,
)

if TYPE_CHECKING:
    from approvals.projections.status.view import StatusView
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)


class ProjectionService:
    """``async with ProjectionService(settings): ...``; ``scheduler=False`` leaves expiry out.

    Any number of instances may serve one view (a PostgreSQL schema): all answer queries (a
    queue group); the one holding the view's lease (``projector.<view>`` in ``approvals_leases``)
    runs the projector and the schedulers, and another takes over within the lease's length when
    it dies. The projector's consumer is durable, so nothing is lost in between."""

    name = "projection"

    def __init__(self, settings: Settings, *, scheduler: bool = True) -> None:
        self.settings = settings
        self.broker = bus.broker(settings, log)
        self.with_scheduler = scheduler
        self.view: StatusView | None = None
        self.waiters = Waiters()
        self.projector: Projector | None = None
        self.queries: QueryHandlers | None = None
        # What the lease's holder runs (the projector and the schedulers); what of it runs now.
        self._leading_parts: list[Projector | ExpiryScheduler | ReminderScheduler] = []
        self._writers: list[Projector | ExpiryScheduler | ReminderScheduler] = []
        self.lease: Lease | None = None
        self._leading: asyncio.Task[None] | None = None
        self._pending_seen: set[str] = set()  # workspaces with pending gauges set

    async def start(self) -> None:
        self.view = await asyncio.to_thread(open_view, self.settings)
        blocking = self.settings.store == "postgres"
        await self.broker.start()
        nc = self.broker.connection
        self.queries = QueryHandlers(self.view, nc, self.waiters, self.settings,
                                     blocking_io=blocking)  # fmt: skip
        await self.queries.start()
        self.projector = Projector(
            self.view, nc, on_change=self.waiters.notify, bulk=self.view.bulk_writer()
        )
        self._leading_parts = [self.projector]
        if self.with_scheduler:
            self._leading_parts.append(ExpiryScheduler(self.view, nc, blocking_io=blocking))
            self._leading_parts.append(ReminderScheduler(self.view, nc, blocking_io=blocking))
        self.lease = Lease(nc, view_lease(self.settings), ttl_s=self.settings.lease_ttl_s)
        await self.lease.start()
        self._leading = asyncio.create_task(self._lead(), name="projection-lease")
        if self.lease.held.is_set():
            await self._follow_lease()  # the first instance projects before start() returns

    async def _lead(self) -> None:
        """Run the projector and the schedulers while this instance holds the view's lease."""
        while True:
            await asyncio.sleep(0.2)
            try:
                await self._follow_lease()
            except Exception:
                # The bus failing over while this instance takes over (or hands over): start
                # again from nothing at the next turn, never half-started.
                log.exception("status projection: taking over failed; trying again")
                with contextlib.suppress(Exception):
                    await self._stop_writers()
                await asyncio.sleep(1.0)

    async def _follow_lease(self) -> None:
        assert self.lease is not None
        if self.lease.held.is_set() and not self._writers:
            log.info("status projection: this instance projects from now on")
            for part in self._leading_parts:
                self._writers.append(part)  # first: a start that fails half-way is undone
                await part.start()
        elif not self.lease.held.is_set() and self._writers:
            log.warning("status projection: lease lost, another instance projects")
            await self._stop_writers()

    async def _stop_writers(self) -> None:
        writers, self._writers = self._writers, []
        for part in reversed(writers):
            await part.stop()

    async def stop(self) -> None:
        if self._leading is not None:
            self._leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leading
            self._leading = None
        await self._stop_writers()
        if self.queries is not None:
            await self.queries.stop()
            self.queries = None
        if self.lease is not None:
            await self.lease.stop()  # hands the view over at once
        await self.broker.stop()
        if self.view is not None:
            self.view.datastore.close()  # type: ignore[attr-defined]

    async def ready(self) -> bool:
        """Answering queries: connected, and the view answers (its position against the
        stream's last event: the projection's lag)."""
        view, projector = self.view, self.projector
        if view is None or projector is None or self.queries is None:
            return False
        if not self.broker.connection.is_connected:
            return False
        position = await asyncio.to_thread(view.position)
        js = self.broker.connection.jetstream()
        PROJECTION_LAG.set(max(0, await bus.last_position(js) - position))
        info = await js.consumer_info(STREAM, projector.durable)
        CONSUMER_LAG.labels(projector.durable).set(lag_of(info))
        pending_gauges(await asyncio.to_thread(view.pending), self._pending_seen)
        return True

    async def __aenter__(self) -> ProjectionService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def pending_gauges(pending: dict[str, tuple[int, datetime]], seen: set[str]) -> None:
    """Set the pending gauges from the view; a workspace no longer waiting on anything reads 0."""
    now = datetime.now(UTC)
    for workspace in seen - pending.keys():
        PENDING.labels(workspace).set(0)
        OLDEST_PENDING.labels(workspace).set(0)
    for workspace, (count, oldest) in pending.items():
        PENDING.labels(workspace).set(count)
        OLDEST_PENDING.labels(workspace).set(max(0.0, (now - oldest).total_seconds()))
    seen.update(pending)


def view_lease(settings: Settings) -> str:
    """The lease of one view: its PostgreSQL database and schema, or its SQLite file."""
    if settings.store == "postgres":
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(settings.postgres_dsn or "")
        schema = settings.view_postgres_schema or settings.postgres_schema or "public"
        where = ":".join(str(info.get(k, "")) for k in ("host", "port", "dbname"))
        identity = f"postgres:{where}:{schema}"  # not the credentials: they may differ
    else:
        identity = f"sqlite:{settings.view_sqlite_path.resolve()}"
    return "projector." + hashlib.sha256(identity.encode()).hexdigest()[:16]
