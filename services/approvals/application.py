"""The Approvals application: the only code that touches the event store.

Commands are handled in batches: every command of a batch is decided against the state left by
the ones before it, and all their events are saved in one transaction (group commit). When the
save meets a version conflict (another instance wrote first), nothing of the batch was stored, so
the whole batch is decided again against fresh state. Only a batch that keeps losing is split:
each command is then decided and saved alone, and gets its own answer (its result, a `conflict`
if it kept losing, `unavailable` if the store failed on it), whatever happened to the others.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from approvals.schemas import chain, codec, commands, events
from approvals.services.approvals import (
    apikeys,
    budget,
    domain,
    governance,
    grants,
    passkeys,
    ratelimit,
)
from approvals.services.approvals.aggregates import EVOLVERS, evolve, project
from approvals.services.approvals.errors import ApprovalError, Conflict, NotFound, Unavailable
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.store import MsgspecMapper, stored_topic
from approvals.services.approvals.verbs import IDEMPOTENCY_NAMESPACE, VERBS, Decision

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eventsourcing.persistence import Notification, Recording

    from approvals.schemas.replies import PolicyInfo
    from approvals.schemas.workspace import Change

__all__ = ["EVOLVERS", "IDEMPOTENCY_NAMESPACE", "Approvals", "Handled", "Result", "State", "evolve"]

log = logging.getLogger(__name__)

DEFAULT_EXPIRY_S = 86400
# Each lost save means another instance committed, so trying again makes progress. Splitting a
# batch into one save per command multiplies the saves that can lose (two instances both doing
# it on the budget lose to each other turn by turn), so the whole batch is tried again first.
BATCH_ATTEMPTS = 4
CONFLICT_RETRIES = 8


class Result(NamedTuple):
    outcome: str
    approval: domain.Approval | None
    replayed: bool = False
    policy: PolicyInfo | None = None
    workspace: governance.Workspace | None = None
    changes: tuple[Change, ...] | None = None


class Handled(NamedTuple):
    """The results of a batch, in command order, and the last notification id it wrote."""

    results: list[Result | ApprovalError]
    last_notification_id: int | None


Work = tuple[str, commands.Command]  # (workspace id, command)


class State(dict[UUID, Any]):
    """What a batch has loaded or changed (approvals, workspaces, budgets, allowances, API
    keys), each read from the store the first time a decision asks for it; and the hash chain's
    last link of each aggregate, where known. The ``Reads`` the decide-functions take."""

    def __init__(self, app: Approvals | None = None) -> None:
        super().__init__()
        self.links: dict[UUID, str] = {}
        self._app = app
        # Stored events read ahead for the batch in one query (PostgreSQL), by aggregate.
        self.prefetched: dict[UUID, list[Any]] = {}
        self.default_expiry_s = app.default_expiry_s if app else DEFAULT_EXPIRY_S

    def _aggregate(self, key: UUID, approval: bool = False) -> Any:
        if key not in self:
            assert self._app is not None, "a state without an application loads nothing"
            # An approval by its own loader's name (the tests watch it), any other by the same.
            load = self._app._load if approval else self._app._load_with
            self[key] = load(key, self)
        return self[key]

    def approval(self, approval_id: UUID) -> domain.Approval | None:
        return self._aggregate(approval_id, approval=True)  # type: ignore[no-any-return]

    def workspace(self, workspace_id: str) -> governance.Workspace | None:
        return self._aggregate(governance.workspace_key(workspace_id))  # type: ignore[no-any-return]

    def budget(self, workspace_id: str, period: str) -> budget.Budget | None:
        return self._aggregate(budget.budget_key(workspace_id, period))  # type: ignore[no-any-return]

    def allowance(self, workspace_id: str, rule: str, day: str) -> governance.Allowance | None:
        key = governance.allowance_key(workspace_id, rule, day)
        return self._aggregate(key)  # type: ignore[no-any-return]

    def api_key(self, workspace_id: str, key_id: str) -> apikeys.ApiKey | None:
        return self._aggregate(apikeys.api_key_key(workspace_id, key_id))  # type: ignore[no-any-return]

    def grant(self, slot: UUID) -> grants.Grant | None:
        return self._aggregate(slot)  # type: ignore[no-any-return]

    def passkey(self, workspace_id: str, credential_id: str) -> passkeys.Passkey | None:
        return self._aggregate(passkeys.passkey_key(workspace_id, credential_id))  # type: ignore[no-any-return]

    def passkey_counter(self, workspace_id: str, credential_id: str) -> passkeys.Counter | None:
        key = passkeys.counter_key(workspace_id, credential_id)
        if key not in self:
            assert self._app is not None, "a state without an application loads nothing"
            self[key] = self._app._load_last(key, self)
        return self[key]  # type: ignore[no-any-return]

    def requester_count(self, workspace_id: str, requester: str) -> ratelimit.RequesterCount | None:
        key = ratelimit.count_key(workspace_id, requester)
        if key not in self:
            assert self._app is not None, "a state without an application loads nothing"
            self[key] = self._app._load_last(key, self)
        return self[key]  # type: ignore[no-any-return]


class Approvals(Application[UUID]):
    name = "approvals"
    env: ClassVar[dict[str, str]] = {"MAPPER_TOPIC": get_topic(MsgspecMapper)}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        default_expiry_s: int = DEFAULT_EXPIRY_S,
        signer: Signer | None = None,
    ):
        super().__init__(env)
        self.default_expiry_s = default_expiry_s
        self.signer = signer or Signer.generate()  # an unconfigured key lives in memory only

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
        for _ in range(BATCH_ATTEMPTS):
            results, new_events, state = self._decide_all(batch, now)
            if not new_events:
                return Handled(results, None)
            try:
                recordings = self._put(new_events, state)
            except IntegrityError:
                continue  # the transaction stored nothing: decide it all again, fresh
            return Handled(results, recordings[-1].notification.id)
        return self._handle_one_by_one(batch, now)

    def _handle_one_by_one(self, batch: Sequence[Work], now: datetime) -> Handled:
        """Each command in a save of its own. Never raises: commands before one that fails are
        stored, and their results must reach their callers."""
        results: list[Result | ApprovalError] = []
        last_id: int | None = None
        for work in batch:
            result, stored_up_to = self._handle_alone(work, now)
            results.append(result)
            last_id = stored_up_to or last_id
        return Handled(results, last_id)

    def _handle_alone(self, work: Work, now: datetime) -> tuple[Result | ApprovalError, int | None]:
        """One command's result and the last notification id it wrote, or its own error."""
        for _ in range(CONFLICT_RETRIES):
            try:
                [result], new_events, state = self._decide_all([work], now)
                recordings = self._put(new_events, state) if new_events else []
            except IntegrityError:
                continue
            except Exception:
                log.exception("a %s command failed in the store", type(work[1]).__name__)
                return Unavailable(
                    "the store failed; nothing of this command was stored; retry"
                ), None
            return result, recordings[-1].notification.id if recordings else None
        return Conflict(
            "other writers kept changing what this command depends on; nothing of it was "
            "stored; retry",
            rule="concurrent_writes",
            attempts=BATCH_ATTEMPTS + CONFLICT_RETRIES,
        ), None

    def _put(self, new_events: list[Any], state: State) -> list[Recording[UUID]]:
        """Chain each event to the one before it in its aggregate, then store them all."""
        chained = []
        for event in new_events:
            aggregate_id = event.originator_id
            if event.originator_version == 1:
                previous = chain.GENESIS
            else:
                previous = state.links.get(aggregate_id) or self._last_link(aggregate_id)
            raw = msgspec.to_builtins(event)
            del raw["hash"]
            state.links[aggregate_id] = link = chain.link(previous, chain.content(raw))
            chained.append(msgspec.structs.replace(event, hash=link))
        # The event store directly: ``save`` would look for aggregates, snapshots and a cache
        # this application does not have, with a slow Protocol check per event.
        return self.events.put(chained)

    def _last_link(self, aggregate_id: UUID) -> str:
        """The link of an aggregate's last stored event, computed from the stored JSON when it
        carries none (version 1 events, stored before the chain existed)."""
        stored = self.recorder.select_events(aggregate_id)
        if not stored:
            return chain.GENESIS
        last = msgspec.json.decode(stored[-1].state)
        if last.get("hash"):
            return str(last["hash"])
        link = chain.GENESIS
        for record in stored:
            link = chain.link(link, chain.content(msgspec.json.decode(record.state)))
        return link

    def _decide_all(
        self, batch: Sequence[Work], now: datetime
    ) -> tuple[list[Result | ApprovalError], list[Any], State]:
        """Decide each command against the state the ones before it left; fold each event
        into that state once (the next command, and this one's reply, read it from there)."""
        state = State(self)
        self._prefetch(batch, state)
        results: list[Result | ApprovalError] = []
        new_events: list[Any] = []
        for workspace_id, cmd in batch:
            decide = VERBS.get(type(cmd))
            if decide is None:
                raise TypeError(f"unknown command {type(cmd).__name__}")
            try:
                decision = decide(state, workspace_id, cmd, now)
            except ApprovalError as error:
                results.append(error)
                continue
            for event in decision.events:
                if cmd.via is not None:  # every event the command caused records its door
                    event = msgspec.structs.replace(event, via=cmd.via)
                if type(event) is events.Approved:  # signed as the approval stands before it
                    receipt = self.signer.sign(state[event.approval_id], event)
                    event = msgspec.structs.replace(event, receipt=receipt)
                state[event.originator_id] = evolve(state.get(event.originator_id), event)
                new_events.append(event)
            results.append(_result(decision, workspace_id, state))
        return results, new_events, state

    def api_key(self, workspace_id: str, key_id: str) -> apikeys.ApiKey | None:
        return State(self).api_key(workspace_id, key_id)

    def notifications_of(self, cls: type, after: int) -> Iterator[Notification]:
        """The stored events of one class after notification ``after``, in order, a thousand
        at a time (filtered by their stored topic in the store's own query)."""
        topic, last = stored_topic(cls), after
        while page := self.recorder.select_notifications(
            start=last + 1, limit=1000, topics=[topic], inclusive_of_start=True
        ):
            yield from page
            last = page[-1].id

    def configured_workspaces(self, after: int) -> tuple[set[str], int]:
        """Workspaces configured after notification ``after``, and the last notification read."""
        found: set[str] = set()
        last = after
        for notification in self.notifications_of(events.WorkspaceConfigured, after):
            found.add(codec.envelope_decoder.decode(notification.state).workspace_id)
            last = notification.id
        return found, last

    def workspace(self, workspace_id: str) -> governance.Workspace | None:
        return State(self).workspace(workspace_id)

    def grant_slots(self, after: int) -> tuple[dict[str, set[UUID]], int]:
        """The slots given a grant after notification ``after``, by workspace, and the last
        notification read (a grant's slot is where its uses and its revoke are stored too)."""
        return self._originators_of(events.GrantGiven, after)

    def grant(self, slot: UUID) -> grants.Grant | None:
        return State(self).grant(slot)

    def passkey_ids(self, after: int) -> tuple[dict[str, set[UUID]], int]:
        """The credentials registered after notification ``after``, by workspace, and the last
        notification read (a credential's uses and removal are stored where it was)."""
        return self._originators_of(events.PasskeyRegistered, after)

    def _originators_of(self, cls: type, after: int) -> tuple[dict[str, set[UUID]], int]:
        """The aggregates a ``cls`` event was stored in after notification ``after``, by
        workspace, and the last notification read."""
        found: dict[str, set[UUID]] = {}
        last = after
        for notification in self.notifications_of(cls, after):
            envelope = codec.envelope_decoder.decode(notification.state)
            found.setdefault(envelope.workspace_id, set()).add(
                UUID(str(notification.originator_id))
            )
            last = notification.id
        return found, last

    def passkey(self, aggregate_id: UUID) -> passkeys.Passkey | None:
        return State(self)._aggregate(aggregate_id)  # type: ignore[no-any-return]

    def budget_in(self, workspace_id: str, period: str) -> budget.Budget | None:
        """A period's budget aggregate (None when nothing was reserved in it yet)."""
        return State(self).budget(workspace_id, period)

    def _load(self, approval_id: UUID, state: State | None = None) -> domain.Approval | None:
        return self._load_with(approval_id, state)  # type: ignore[no-any-return]

    def _load_last(self, aggregate_id: UUID, state: State) -> Any:
        """An aggregate whose every event carries its whole state, from its last event only."""
        last: list[Any] = list(self.events.get(aggregate_id, desc=True, limit=1))
        if not last:
            return None
        if last[0].hash:
            state.links[aggregate_id] = last[0].hash
        return evolve(None, last[0])

    def _prefetch(self, batch: Sequence[Work], state: State) -> None:
        """On PostgreSQL, read the events of the batch's workspaces and approvals in one query
        instead of one round trip each as the decisions ask for them (the same reads, the same
        isolation: each is a committed snapshot, and the insert's version check catches any
        change made after it, as before). SQLite reads locally: nothing to gain there."""
        recorder = self.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            return
        keys = {governance.workspace_key(workspace_id) for workspace_id, _ in batch}
        keys.update(
            key for _, cmd in batch if isinstance(key := getattr(cmd, "approval_id", None), UUID)
        )
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        found: dict[UUID, list[Any]] = {key: [] for key in keys}
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, [list(keys)])
            for row in cursor.fetchall():
                found[row["originator_id"]].append(
                    StoredEvent(
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                )
        state.prefetched = found

    def _load_with(self, aggregate_id: UUID, state: State | None = None) -> Any:
        """Any aggregate from its stored events (None: none stored), noting its last link."""
        if state is not None and aggregate_id in state.prefetched:
            stored = state.prefetched.pop(aggregate_id)
            read: list[Any] = [self.mapper.to_domain_event(event) for event in stored]
            if read and read[-1].hash:
                state.links[aggregate_id] = read[-1].hash
            return project(None, read) if read else None
        history: list[Any] = []

        def fold(initial: Any, stored: Any) -> Any:
            history.extend(stored)
            return project(initial, history)

        try:
            aggregate = self.repository.get(aggregate_id, projector_func=fold)
        except AggregateNotFoundError:
            return None
        if state is not None and history and history[-1].hash:
            state.links[aggregate_id] = history[-1].hash
        return aggregate


def _result(decision: Decision, workspace_id: str, state: State) -> Result:
    """A decision's reply: the approval and the workspace as its events left them."""
    return Result(
        decision.outcome,
        state.get(decision.approval_id) if decision.approval_id else None,
        decision.replayed,
        decision.policy,
        state.workspace(workspace_id) if decision.with_workspace else None,
        decision.changes,
    )
