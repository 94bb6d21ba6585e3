"""The Approvals application: the only code that touches the event store.

Commands are handled in batches: every command of a batch is decided against the state left by
the ones before it, and all their events are saved in one transaction (group commit). When the
save meets a version conflict (another instance wrote first), each command is decided again,
alone, against fresh state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from uuid import UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from schemas import commands
from services.approvals import domain
from services.approvals.errors import ApprovalError, NotFound
from services.approvals.policy import requires_approval
from services.approvals.store import MsgspecMapper

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import Notification, Recording

    from schemas import events

IDEMPOTENCY_NAMESPACE = UUID("6f1d7c1e-3a0b-4c55-9d3e-4b8f1f0a9e21")
CONFLICT_RETRIES = 5


class Result(NamedTuple):
    outcome: str
    approval: domain.Approval | None
    replayed: bool = False


class Handled(NamedTuple):
    """The results of a batch, in command order, and the last notification id it wrote."""

    results: list[Result | ApprovalError]
    last_notification_id: int | None


Work = tuple[str, commands.Command]  # (workspace id, command)


class Approvals(Application[UUID]):
    name = "approvals"
    env: ClassVar[dict[str, str]] = {"MAPPER_TOPIC": get_topic(MsgspecMapper)}

    def __init__(self, env: dict[str, str] | None = None, *, default_expiry_s: int = 86400):
        super().__init__(env)
        self.default_expiry_s = default_expiry_s

    # -- reads ---------------------------------------------------------------------------

    def get(self, approval_id: UUID, workspace_id: str | None = None) -> domain.Approval:
        approval = self._load(approval_id)
        if approval is None or (workspace_id and approval.workspace_id != workspace_id):
            raise NotFound("no such approval", approval_id=str(approval_id))
        return approval

    def notifications(self, start: int, limit: int) -> Sequence[Notification]:
        return self.recorder.select_notifications(start=start, limit=limit)

    def last_notification_id(self) -> int:
        return self.recorder.max_notification_id() or 0

    # -- writes --------------------------------------------------------------------------

    def handle(
        self, workspace_id: str, cmd: commands.Command, now: datetime | None = None
    ) -> Result:
        """Handle one command; raise its ApprovalError if refused."""
        outcome = self.handle_batch([(workspace_id, cmd)], now).results[0]
        if isinstance(outcome, ApprovalError):
            raise outcome
        return outcome

    def handle_batch(self, batch: Sequence[Work], now: datetime | None = None) -> Handled:
        """Decide every command of ``batch`` and save all their events in one transaction."""
        now = now or datetime.now(UTC)
        results, new_events = self._decide_all(batch, now)
        if not new_events:
            return Handled(results, None)
        try:
            recordings = self._put(new_events)
        except IntegrityError:
            return self._handle_one_by_one(batch, now)
        return Handled(results, recordings[-1].notification.id)

    def _handle_one_by_one(self, batch: Sequence[Work], now: datetime) -> Handled:
        results: list[Result | ApprovalError] = []
        last_id: int | None = None
        for work in batch:
            for attempt in range(CONFLICT_RETRIES):
                [result], new_events = self._decide_all([work], now)
                try:
                    recordings = self._put(new_events) if new_events else []
                except IntegrityError:
                    if attempt == CONFLICT_RETRIES - 1:
                        raise
                    continue
                if recordings:
                    last_id = recordings[-1].notification.id
                results.append(result)
                break
        return Handled(results, last_id)

    def _put(self, new_events: list[events.Event]) -> list[Recording[UUID]]:
        # The event store directly: ``save`` would look for aggregates, snapshots and a cache
        # this application does not have, with a slow Protocol check per event.
        return self.events.put(new_events)

    def _decide_all(
        self, batch: Sequence[Work], now: datetime
    ) -> tuple[list[Result | ApprovalError], list[events.Event]]:
        state: dict[UUID, domain.Approval | None] = {}
        results: list[Result | ApprovalError] = []
        new_events: list[events.Event] = []
        for workspace_id, cmd in batch:
            try:
                result, event = self._decide(workspace_id, cmd, now, state)
            except ApprovalError as error:
                results.append(error)
                continue
            if event is not None:
                new_events.append(event)
                state[event.approval_id] = result.approval
            results.append(result)
        return results, new_events

    def _decide(
        self,
        workspace_id: str,
        cmd: commands.Command,
        now: datetime,
        state: dict[UUID, domain.Approval | None],
    ) -> tuple[Result, events.Event | None]:
        if isinstance(cmd, commands.Request):
            return self._decide_request(workspace_id, cmd, now, state)
        approval_id: UUID = cmd.approval_id  # type: ignore[attr-defined]
        approval = self._current(approval_id, state)
        if approval is None or approval.workspace_id != workspace_id:
            raise NotFound("no such approval", approval_id=str(approval_id))
        event: events.Event
        match cmd:
            case commands.Approve():
                event = domain.approve(approval, cmd, now)
            case commands.Reject():
                event = domain.reject(approval, cmd, now)
            case commands.Cancel():
                event = domain.cancel(approval, cmd, now)
            case commands.Expire():
                event = domain.expire(approval, cmd, now)
            case commands.Deliver():
                event = domain.deliver(approval, cmd, now)
            case _:
                raise TypeError(f"unknown command {type(cmd).__name__}")
        after = domain.mutate(event, approval)
        return Result(event.event_type, after), event

    def _decide_request(
        self,
        workspace_id: str,
        cmd: commands.Request,
        now: datetime,
        state: dict[UUID, domain.Approval | None],
    ) -> tuple[Result, events.Event | None]:
        if not requires_approval(cmd.action):
            return Result("not_required", None), None
        if cmd.idempotency_key is None:
            approval_id = uuid4()
        else:
            approval_id = uuid5(IDEMPOTENCY_NAMESPACE, f"{workspace_id}\x00{cmd.idempotency_key}")
            existing = self._current(approval_id, state)
            if existing is not None:
                domain.request_again(existing, cmd)
                return Result("approval_required", existing, replayed=True), None
        event = domain.request(
            cmd,
            approval_id=approval_id,
            workspace_id=workspace_id,
            now=now,
            default_expiry_s=self.default_expiry_s,
        )
        return Result("approval_required", domain.mutate(event, None)), event

    def _current(
        self, approval_id: UUID, state: dict[UUID, domain.Approval | None]
    ) -> domain.Approval | None:
        if approval_id not in state:
            state[approval_id] = self._load(approval_id)
        return state[approval_id]

    def _load(self, approval_id: UUID) -> domain.Approval | None:
        try:
            approval: Any = self.repository.get(approval_id, projector_func=domain.project)
        except AggregateNotFoundError:
            return None
        return approval  # type: ignore[no-any-return]
