"""NATS request/reply handlers for ``approvals.query.<workspace>.<verb>`` (queue group)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from approvals.schemas import queries, subjects
from approvals.schemas.codec import encode_error, encoder
from approvals.schemas.types import TERMINAL_STATUSES
from approvals.services.approvals.views import web_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from approvals.projections.status.view import StatusView
    from approvals.projections.status.waiters import Waiters
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

APPEAR_WITHIN_S = 2.0  # how long `wait` gives an approval the view does not hold yet
RECHECK_S = 0.25  # re-read at least this often: another process may be writing the view
STOP_S = 5.0  # what the queries still running at stop may take to answer before they are cut

_decoders = {verb: msgspec.json.Decoder(cls) for verb, cls in queries.QUERIES.items()}


class QueryError(Exception):
    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class QueryHandlers:
    def __init__(
        self,
        view: StatusView,
        nc: Client,
        waiters: Waiters,
        settings: Settings,
        *,
        blocking_io: bool = False,
    ) -> None:
        self.view = view
        self.nc = nc
        self.waiters = waiters
        self.settings = settings
        self.blocking_io = blocking_io
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        for verb in queries.QUERY_VERBS:
            self._subscriptions.append(
                await self.nc.subscribe(
                    subjects.query_wildcard(verb), queue=queries.QUERY_QUEUE, cb=self._on_message
                )
            )

    async def stop(self) -> None:
        """Take no more queries and answer the open ones: a wait is answered ``unavailable``
        now (another instance, or this one restarted, answers the retry) rather than left to
        time out at the caller, and it does not hold up the stop for as long as it lasts."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()
        self._stopping = True
        self.waiters.wake_all()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=STOP_S)
            for task in late:
                task.cancel()
        with contextlib.suppress(Exception):  # the bus may be gone already: nothing to send
            await self.nc.flush(timeout=2)

    async def _on_message(self, msg: Msg) -> None:
        # Each query runs in its own task: a wait must not hold up the queries behind it.
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            workspace_id, query = self._decode(msg)
            reply = await self._dispatch(workspace_id, query)
        except QueryError as error:
            reply = encode_error(error.code, error.message, error.details)
        except Exception:
            log.exception("query on %s failed", msg.subject)
            reply = encode_error("unavailable", "the view failed to answer; retry")
        if msg.reply:
            await self.nc.publish(msg.reply, reply)

    def _decode(self, msg: Msg) -> tuple[str, queries.Query]:
        _, _, workspace_id, verb = msg.subject.split(".", 3)
        if not subjects.is_token(workspace_id):
            raise QueryError("invalid", f"workspace must match {subjects.TOKEN_PATTERN}")
        if len(msg.data) > self.settings.max_payload_bytes:
            raise QueryError("too_large", "the query is over the size limit")
        try:
            return workspace_id, _decoders[verb].decode(msg.data or b"{}")
        except msgspec.ValidationError as error:
            raise QueryError("invalid", f"invalid {verb} query: {error}") from None
        except msgspec.DecodeError as error:
            raise QueryError("invalid", f"malformed JSON: {error}") from None

    async def _read(self, read: Callable[..., T], *args: Any) -> T:
        if self.blocking_io:
            return await asyncio.to_thread(read, *args)
        return read(*args)

    async def _dispatch(self, workspace_id: str, query: queries.Query) -> bytes:
        match query:
            case queries.Get():
                view, caught_up = await self._get(workspace_id, query)
                return encoder.encode(queries.ViewReply(approval=view, caught_up=caught_up))
            case queries.List():
                try:
                    items, cursor = await self._read(self.view.list_page, workspace_id, query)
                except ValueError as error:
                    raise QueryError("invalid", str(error)) from None
                items = [self._with_url(item) for item in items]
                return encoder.encode(queries.ListReply(items=items, next_cursor=cursor))
            case queries.Count():
                counts = await self._read(self.view.count, workspace_id, query.status)
                reply = queries.CountReply(counts=counts, total=sum(counts.values()))
                return encoder.encode(reply)
            case queries.History():
                timeline = await self._read(self.view.history, workspace_id, query.approval_id)
                if timeline is None:
                    raise _not_found(query.approval_id)
                reply_h = queries.HistoryReply(approval_id=query.approval_id, timeline=timeline)
                return encoder.encode(reply_h)
            case queries.Wait():
                view, done = await self._until(
                    workspace_id,
                    query.approval_id,
                    lambda v: v.status in TERMINAL_STATUSES,
                    query.timeout_s,
                    appear_within_s=min(query.timeout_s, APPEAR_WITHIN_S),
                )
                return encoder.encode(queries.WaitReply(approval=view, timed_out=not done))
        raise QueryError("invalid", f"unknown query {type(query).__name__}")

    async def _get(
        self, workspace_id: str, query: queries.Get
    ) -> tuple[queries.ApprovalView, bool]:
        if query.min_version is None:
            view = await self._read(self.view.get, workspace_id, query.approval_id)
            if view is None:
                raise _not_found(query.approval_id)
            return self._with_url(view), True
        min_version = query.min_version
        return await self._until(
            workspace_id,
            query.approval_id,
            lambda v: v.version >= min_version,
            query.timeout_s,
            appear_within_s=query.timeout_s,
        )

    async def _until(
        self,
        workspace_id: str,
        approval_id: UUID,
        condition: Callable[[queries.ApprovalView], bool],
        timeout_s: float,
        *,
        appear_within_s: float,
    ) -> tuple[queries.ApprovalView, bool]:
        """The row once ``condition`` holds, or as it is at the timeout (with False).

        A row the view does not hold yet is waited for up to ``appear_within_s`` (the caller may
        be reading its own write), then it is ``not_found``.

        The waiter is registered before each read, so a change that lands between the read and
        the wait still wakes it; a slower re-read covers a view another process writes.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            future = self.waiters.register(approval_id)
            try:
                view = await self._read(self.view.get, workspace_id, approval_id)
                now = time.monotonic()
                if view is None:
                    if now - started >= appear_within_s:
                        raise _not_found(approval_id)
                elif condition(view):
                    return self._with_url(view), True
                if self._stopping:
                    raise QueryError("unavailable", "the status view is stopping; retry")
                if view is not None and now >= deadline:
                    return self._with_url(view), False
                remaining = min(deadline, started + appear_within_s) if view is None else deadline
                remaining -= now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(remaining, RECHECK_S))):
                        await future
            finally:
                self.waiters.discard(approval_id, future)

    def _with_url(self, view: queries.ApprovalView) -> queries.ApprovalView:
        url = web_url(self.settings.web_url, view.workspace_id, str(view.id))
        return msgspec.structs.replace(view, web_url=url)


def _not_found(approval_id: UUID) -> QueryError:
    return QueryError("not_found", "no such approval", approval_id=str(approval_id))
