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
from uuid import UUID, uuid4, uuid5

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from approvals.schemas import chain, codec, commands, events
from approvals.schemas.replies import PolicyInfo
from approvals.services.approvals import apikeys, budget, domain, governance, policy
from approvals.services.approvals.errors import (
    ApprovalError,
    Conflict,
    NotFound,
    SpendCapExceeded,
    Unavailable,
)
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.store import MsgspecMapper, stored_topic

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import Notification, Recording

    from approvals.schemas.workspace import Change

log = logging.getLogger(__name__)

IDEMPOTENCY_NAMESPACE = UUID("6f1d7c1e-3a0b-4c55-9d3e-4b8f1f0a9e21")
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
    """What a batch has loaded or changed (approvals, workspaces, allowances, ...), and the
    hash chain's last link of each aggregate, where known."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[UUID, str] = {}


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
        state = State()
        results: list[Result | ApprovalError] = []
        new_events: list[Any] = []
        for workspace_id, cmd in batch:
            try:
                result, produced = self._decide(workspace_id, cmd, now, state)
            except ApprovalError as error:
                results.append(error)
                continue
            if cmd.via is not None:  # every event the command caused records its door
                produced = [msgspec.structs.replace(e, via=cmd.via) for e in produced]
            for event in produced:
                state[event.originator_id] = evolve(state.get(event.originator_id), event)
            new_events.extend(produced)
            results.append(result)
        return results, new_events, state

    def _decide(
        self, workspace_id: str, cmd: commands.Command, now: datetime, state: State
    ) -> tuple[Result, list[Any]]:
        if isinstance(cmd, commands.Configure):
            current = self._workspace(workspace_id, state)
            configured = governance.configure(current, workspace_id, cmd, now)
            if configured is None:  # already in force
                return Result("configured", None, workspace=current, changes=()), []
            configured_ws = governance.evolve_workspace(current, configured)
            return Result(
                "configured", None, workspace=configured_ws, changes=configured.changes
            ), [configured]
        if isinstance(cmd, commands.Request):  # and Check, its dry twin
            ws = governance.require_workspace(self._workspace(workspace_id, state), workspace_id)
            return self._decide_request(ws, cmd, now, state)
        if isinstance(cmd, commands.CreateApiKey | commands.RevokeApiKey):
            ws = governance.require_workspace(self._workspace(workspace_id, state), workspace_id)
            key = apikeys.api_key_key(workspace_id, cmd.key_id)
            existing = self._api_key(key, state)
            if isinstance(cmd, commands.CreateApiKey):
                return Result("api_key_created", None), [apikeys.create(ws, existing, cmd, now)]
            return Result("api_key_revoked", None), [apikeys.revoke(ws, existing, cmd, now)]
        if isinstance(cmd, commands.Delegate):
            ws = governance.require_workspace(self._workspace(workspace_id, state), workspace_id)
            delegated = governance.delegate(ws, cmd, now)
            return Result(
                "delegated", None, workspace=governance.evolve_workspace(ws, delegated)
            ), [delegated]
        approval_id: UUID = cmd.approval_id  # type: ignore[attr-defined]
        approval = self._current(approval_id, state)
        if approval is None or approval.workspace_id != workspace_id:
            raise NotFound("no such approval", approval_id=str(approval_id))
        ws = self._governing(workspace_id, state)
        produced: list[Any]
        match cmd:
            case commands.Approve():
                produced = domain.approve(approval, cmd, now, ws)
                if isinstance(produced[-1], events.Approved):
                    produced = self._grant(ws, approval, produced[-1], now, state)
            case commands.Reject():
                produced = [domain.reject(approval, cmd, now, ws)]
            case commands.Cancel():
                produced = [domain.cancel(approval, cmd, now, ws)]
            case commands.Expire():
                produced = [domain.expire(approval, cmd, now)]
            case commands.Deliver():
                produced = [domain.deliver(approval, cmd, now)]
            case commands.Redeem():
                governance.require_role(ws, cmd.executor, "requester", "redeem an approval")
                produced = [domain.redeem(approval, cmd, now)]
            case commands.Report():
                governance.require_role(ws, cmd.by, "requester", "report a run")
                produced = [domain.report(approval, cmd, now)]
                produced += self._settle(workspace_id, approval, cmd.credits_used, now, state)
            case commands.Remind():
                produced = [domain.remind(approval, cmd, now, ws.settings.reminders)]
            case commands.Escalate():
                produced = [domain.escalate(approval, cmd, now, ws.settings.reminders)]
            case commands.CheckSpend():
                limits = ws.settings.budget
                held = (
                    self._budget(
                        budget.budget_key(workspace_id, budget.period_of(limits.period, now)),
                        state,
                    )
                    if limits is not None
                    else None
                )
                verdict = budget.check(held, limits, approval.request.action.max_credits, now)
                produced = [domain.check_spend(approval, cmd, now, verdict)]
            case commands.Release():
                period = domain.releasable(approval, now)
                held = self._budget(budget.budget_key(workspace_id, period), state)
                released = budget.release(held, approval.id, now) if held else None
                if released is None:
                    raise Conflict("the approval holds no credits", rule="nothing_held")
                return Result("released", approval), [released]
            case _:
                raise TypeError(f"unknown command {type(cmd).__name__}")
        after = approval
        mine = [e for e in produced if isinstance(e, events.Event)]
        for event in mine:
            after = domain.mutate(event, after)
        return Result(mine[-1].event_type, after), produced

    def _grant(
        self,
        ws: governance.Workspace,
        approval: domain.Approval,
        approved: events.Approved,
        now: datetime,
        state: State,
    ) -> list[Any]:
        """The approval, signed, with its ceiling reserved against the budget in the same save;
        raises SpendCapExceeded (nothing stored) when the cap cannot take it."""
        limits = ws.settings.budget
        ceiling = approval.request.action.max_credits
        if limits is None or ceiling is None:
            return [self._signed(approval, approved)]
        key = budget.budget_key(ws.workspace_id, budget.period_of(limits.period, now))
        reserved = budget.reserve(
            self._budget(key, state), limits, ws.workspace_id, approval.id, ceiling, now
        )
        approved = msgspec.structs.replace(approved, budget_period=reserved.period)
        return [self._signed(approval, approved), reserved]

    def _signed(self, approval: domain.Approval, approved: events.Approved) -> events.Approved:
        return msgspec.structs.replace(approved, receipt=self.signer.sign(approval, approved))

    def _settle(
        self,
        workspace_id: str,
        approval: domain.Approval,
        used: float,
        now: datetime,
        state: State,
    ) -> list[Any]:
        if approval.budget_period is None:
            return []
        held = self._budget(budget.budget_key(workspace_id, approval.budget_period), state)
        settled = budget.settle(held, approval.id, used, now) if held else None
        return [settled] if settled else []

    def _decide_request(
        self,
        ws: governance.Workspace,
        cmd: commands.Request,
        now: datetime,
        state: State,
    ) -> tuple[Result, list[Any]]:
        governance.may_request(ws, cmd)
        answer = policy.evaluate(cmd.action)
        quorum = ws.settings.quorum_for(cmd.risk_level)
        rule = governance.standing_rule(ws, cmd) if answer.required else None
        info = PolicyInfo(
            required=answer.required,
            row=answer.row,
            reason=answer.reason,
            standing_rule=rule.name if rule else None,
            quorum=quorum if answer.required else None,
        )
        if isinstance(cmd, commands.Check):
            if answer.required:
                self._admit(ws, cmd, now, state)
            outcome = "approval_required" if answer.required else "not_required"
            return Result(outcome, None, policy=info), []
        if not answer.required:
            return Result("not_required", None, policy=info), []
        if cmd.idempotency_key is None:
            approval_id = uuid4()
        else:
            approval_id = uuid5(
                IDEMPOTENCY_NAMESPACE, f"{ws.workspace_id}\x00{cmd.idempotency_key}"
            )
            existing = self._current(approval_id, state)
            if existing is not None:
                domain.request_again(existing, cmd)
                return Result("approval_required", existing, replayed=True, policy=info), []
        self._admit(ws, cmd, now, state)
        requested = domain.request(
            cmd,
            approval_id=approval_id,
            workspace_id=ws.workspace_id,
            now=now,
            default_expiry_s=ws.settings.default_expiry_s or self.default_expiry_s,
            quorum=quorum,
        )
        approval = domain.mutate(requested, None)
        if rule is not None and cmd.action.max_credits is not None:
            day = now.date().isoformat()
            key = governance.allowance_key(ws.workspace_id, rule.name, day)
            allowance = self._allowance(key, state)
            used = governance.use_allowance(
                ws, allowance, rule, approval_id, cmd.action.max_credits, day, now
            )
            if used is not None:
                approved = domain.approve_by_policy(approval, rule.name, now, ws)
                try:
                    granted = self._grant(ws, approval, approved, now, state)
                except SpendCapExceeded:
                    granted = []  # the budget cannot take it: a person decides (against the cap)
                if granted:
                    after = domain.mutate(granted[0], approval)
                    return Result("approved", after, policy=info), [requested, used, *granted]
            info = msgspec.structs.replace(info, standing_rule=None)
        return Result("approval_required", approval, policy=info), [requested]

    def _admit(
        self, ws: governance.Workspace, cmd: commands.Request, now: datetime, state: State
    ) -> None:
        """Refuse a ceiling the budget can never take; the period's budget is read only then
        (it is a fold of the period's reservations: too dear for every request)."""
        limits, ceiling = ws.settings.budget, cmd.action.max_credits
        if limits is None or budget.never_fits(limits, ceiling) is None:
            return
        key = budget.budget_key(ws.workspace_id, budget.period_of(limits.period, now))
        budget.admit(self._budget(key, state), limits, ceiling, now)

    def _workspace(self, workspace_id: str, state: State) -> governance.Workspace | None:
        key = governance.workspace_key(workspace_id)
        if key not in state:
            state[key] = self._load_with(key, project_workspace, state)
        return state[key]  # type: ignore[no-any-return]

    def _governing(self, workspace_id: str, state: State) -> governance.Workspace:
        return governance.require_workspace(self._workspace(workspace_id, state), workspace_id)

    def _budget(self, key: UUID, state: State) -> budget.Budget | None:
        if key not in state:
            state[key] = self._load_with(key, project_budget, state)
        return state[key]  # type: ignore[no-any-return]

    def _allowance(self, key: UUID, state: State) -> governance.Allowance | None:
        if key not in state:
            state[key] = self._load_with(key, project_allowance, state)
        return state[key]  # type: ignore[no-any-return]

    def _api_key(self, key: UUID, state: State) -> apikeys.ApiKey | None:
        if key not in state:
            state[key] = self._load_with(key, project_api_key, state)
        return state[key]  # type: ignore[no-any-return]

    def api_key(self, workspace_id: str, key_id: str) -> apikeys.ApiKey | None:
        return self._api_key(apikeys.api_key_key(workspace_id, key_id), State())

    def configured_workspaces(self, after: int) -> tuple[set[str], int]:
        """Workspaces configured after notification ``after``, and the last notification read."""
        topic = stored_topic(events.WorkspaceConfigured)
        found: set[str] = set()
        last = after
        while True:
            page = self.recorder.select_notifications(
                start=last + 1, limit=1000, topics=[topic], inclusive_of_start=True
            )
            if not page:
                return found, last
            for notification in page:
                found.add(codec.envelope_decoder.decode(notification.state).workspace_id)
            last = page[-1].id

    def workspace(self, workspace_id: str) -> governance.Workspace | None:
        return self._workspace(workspace_id, State())

    def budget_in(self, workspace_id: str, period: str) -> budget.Budget | None:
        """A period's budget aggregate (None when nothing was reserved in it yet)."""
        return self._budget(budget.budget_key(workspace_id, period), State())

    def _current(self, approval_id: UUID, state: State) -> domain.Approval | None:
        if approval_id not in state:
            state[approval_id] = self._load(approval_id, state)
        return state[approval_id]  # type: ignore[no-any-return]

    def _load(self, approval_id: UUID, state: State | None = None) -> domain.Approval | None:
        return self._load_with(approval_id, domain.project, state)  # type: ignore[no-any-return]

    def _load_with(self, aggregate_id: UUID, projector: Any, state: State | None = None) -> Any:
        history: list[Any] = []

        def fold(initial: Any, stored: Any) -> Any:
            history.extend(stored)
            return projector(initial, history)

        try:
            aggregate = self.repository.get(aggregate_id, projector_func=fold)
        except AggregateNotFoundError:
            return None
        if state is not None and history and history[-1].hash:
            state.links[aggregate_id] = history[-1].hash
        return aggregate


def project_workspace(ws: governance.Workspace | None, history: Any) -> governance.Workspace | None:
    for event in history:
        ws = governance.evolve_workspace(ws, event)
    return ws


def project_allowance(
    allowance: governance.Allowance | None, history: Any
) -> governance.Allowance | None:
    for event in history:
        allowance = governance.evolve_allowance(allowance, event)
    return allowance


def project_api_key(key: apikeys.ApiKey | None, history: Any) -> apikeys.ApiKey | None:
    for event in history:
        key = apikeys.evolve(key, event)
    return key


def project_budget(held: budget.Budget | None, history: Any) -> budget.Budget | None:
    for event in history:
        held = budget.evolve(held, event)
    return held


def evolve(current: Any, event: Any) -> Any:
    """Any aggregate's next state after one of its events."""
    return EVOLVERS[type(event)](event, current)


def _aggregate(mutator: Any) -> Any:
    return lambda event, current: mutator(current, event)


# One table from event type to the function that evolves its aggregate (the approval's by the
# domain's own dispatch): no chain of isinstance checks on the replay path.
EVOLVERS: dict[type, Any] = {
    **{cls: domain.mutate.dispatch(cls) for cls in events.EVENT_TYPES},
    events.WorkspaceConfigured: _aggregate(governance.evolve_workspace),
    events.Delegated: _aggregate(governance.evolve_workspace),
    events.StandingUsed: _aggregate(governance.evolve_allowance),
    events.CreditsReserved: _aggregate(budget.evolve),
    events.CreditsSettled: _aggregate(budget.evolve),
    events.CreditsReleased: _aggregate(budget.evolve),
    events.ApiKeyCreated: _aggregate(apikeys.evolve),
    events.ApiKeyRevoked: _aggregate(apikeys.evolve),
}
