"""The bus's permission refusals, reported as ``forbidden`` instead of waited out.

A nats-server that refuses a publish or a subscription does not answer the request: it sends
``-ERR 'Permissions Violation for Publish to "<subject>"'``, which nats-py hands to the
connection's error callback (lower-cased), while the request itself only times out. A command
line that waited for the timeout would report an unreachable bus. ``Refusals.hear`` is that
callback: it wakes whoever ``guard``s its work at once with ``ApprovalsError("forbidden")``
naming the subject (in its own case when the code said beforehand which subjects it uses).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, TypeVar

from approvals.client.errors import ApprovalsError

if TYPE_CHECKING:
    from collections.abc import Awaitable

T = TypeVar("T")

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "(.*)"')


class Refusals:
    """Remembers a connection's first permission refusal (``hear`` is its ``error_cb``)."""

    def __init__(self) -> None:
        self.first: ApprovalsError | None = None
        self._refused = asyncio.Event()
        self._names: dict[str, str] = {}

    def expect(self, subject: str) -> None:
        """A subject about to be used: a refusal of it is reported in this spelling."""
        self._names[subject.lower()] = subject

    async def hear(self, error: Exception) -> None:
        found = _VIOLATION.search(str(error))
        if found is None or self.first is not None:
            return  # not a refusal (the caller sees a broken connection itself), or told already
        operation, lowered = found.groups()
        subject = self._names.get(lowered, lowered)
        what = "publish to" if operation == "publish" else "subscribe to"
        self.first = ApprovalsError(
            "forbidden",
            f"this bus user may not {what} {subject}",
            {"subject": subject, "operation": operation},
        )
        self._refused.set()

    async def guard(self, work: Awaitable[T]) -> T:
        """``work``'s result, or ``ApprovalsError("forbidden")`` as soon as the bus refuses
        something (``work`` is then cancelled)."""
        task = asyncio.ensure_future(work)
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if self.first is not None and not (task.done() and not task.exception()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise self.first
        return await task
