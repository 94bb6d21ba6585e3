"""Reminders and escalation: while a request waits, remind its approvers when the workspace's
``[reminders]`` say so, and escalate it to another group after a longer wait.

Like expiry it keeps nothing in memory: each tick reads the waiting approvals (with how often
they were reminded, and whether escalated) from the status view and the workspaces' settings
over NATS, and sends ``remind`` or ``escalate`` for what is due. The command service decides
again (``not_due``, once-only, nothing after a decision), so two schedulers, or a view a little
behind, only cost a refused command. The delivery service carries the reminder to the channels.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
from nats.errors import Error as NatsError

from approvals.projections.status.schedulers import Ticker
from approvals.schemas import subjects
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.replies import WorkspaceReply

if TYPE_CHECKING:
    from approvals.projections.status.view import Waiting
    from approvals.schemas.subjects import CommandVerb
    from approvals.schemas.workspace import Reminders

log = logging.getLogger(__name__)

ACTOR = "service:scheduler"
workspace_reply = msgspec.json.Decoder(WorkspaceReply)


def due(view: Waiting, rules: Reminders, now: datetime) -> list[CommandVerb]:
    """The commands due for a waiting approval: ``escalate`` and/or ``remind``."""
    verbs: list[CommandVerb] = []
    age = now - view.created_at
    if (rules.escalate_after_s is not None and view.escalated_to is None
            and age >= timedelta(seconds=rules.escalate_after_s)):  # fmt: skip
        verbs.append("escalate")
    if view.reminders == 0 or rules.repeat_every_s is not None:
        after = rules.remind_after_s + view.reminders * (rules.repeat_every_s or 0)
        if age >= timedelta(seconds=after):
            verbs.append("remind")
    return verbs


class ReminderScheduler(Ticker):
    name = "reminder-scheduler"

    async def tick(self, now: datetime | None = None) -> int:
        """Send what is due; how many the command service took."""
        now = now or datetime.now(UTC)
        waiting = await self.read(self.view.waiting)
        rules: dict[str, Reminders | None] = {}
        sent = 0
        for view in waiting:
            if view.workspace_id not in rules:
                rules[view.workspace_id] = await self._reminders(view.workspace_id)
            workspace_rules = rules[view.workspace_id]
            if workspace_rules is None:
                continue
            for verb in due(view, workspace_rules, now):
                sent += await self._send(view, verb)
        return sent

    async def _reminders(self, workspace: str) -> Reminders | None:
        try:
            msg = await self.nc.request(subjects.query(workspace, "workspace"), b"{}", 5.0)
        except (NatsError, TimeoutError):
            return None
        if reply_error(msg.data):
            return None
        return workspace_reply.decode(msg.data).workspace.settings.reminders

    async def _send(self, view: Waiting, verb: CommandVerb) -> int:
        body = encoder.encode({"approval_id": view.id, "by": ACTOR})
        try:
            msg = await self.nc.request(subjects.command(view.workspace_id, verb), body, 5.0)
        except (NatsError, TimeoutError) as error:
            log.warning("%s %s not sent (%s); next tick retries", verb, view.id, error)
            return 0
        return 0 if reply_error(msg.data) else 1
