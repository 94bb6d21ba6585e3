"""Expire pending approvals whose deadline has passed.

The aggregate already refuses any decision after the deadline; the scheduler makes the state
visible by sending ``expire`` commands, so ``expired`` is stored and published. It keeps nothing
in memory between ticks: what is due is read from the status view each time, so a restart
picks up where it stopped, and two schedulers at once only cost a refused duplicate command.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.errors import Error as NatsError

from approvals.projections.status.schedulers import Ticker
from approvals.schemas import subjects
from approvals.schemas.codec import encoder, reply_error

log = logging.getLogger(__name__)

ACTOR = "service:scheduler"


class ExpiryScheduler(Ticker):
    name = "expiry-scheduler"

    async def tick(self) -> int:
        return await self.expire_due()

    async def expire_due(self, now: datetime | None = None) -> int:
        """Send ``expire`` for every due approval; return how many the command service took."""
        now = now or datetime.now(UTC)
        due = await self.read(self.view.due, now)
        expired = 0
        for workspace_id, approval_id in due:
            body = encoder.encode({"approval_id": approval_id, "by": ACTOR})
            try:
                msg = await self.nc.request(subjects.command(workspace_id, "expire"), body, 5.0)
            except (NatsError, TimeoutError) as error:
                log.warning("expire %s not sent (%s); next tick retries", approval_id, error)
                continue
            refused = reply_error(msg.data)
            if refused is None:
                expired += 1
            elif refused.code != "already_decided":
                log.warning("expire %s refused: %s", approval_id, refused.message)
        return expired
