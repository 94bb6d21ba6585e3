"""One table from each command (verb) to the function that decides it.

A decide-function takes what the batch holds (``Reads``: the aggregates, loaded from the store
the first time a decision asks for one), the workspace, the command and ``now``; it returns a
``Decision``: the events to store and what the reply shows. It only reads and calls the pure
rules (domain, governance, budget, apikeys); the application saves, folds and replies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import commands, events
from approvals.schemas.replies import PolicyInfo
from approvals.services.approvals import (
    apikeys,
    budget,
    domain,
    governance,
    grants,
    passkeys,
    policy,
    ratelimit,
)
from approvals.services.approvals.errors import Conflict, Forbidden, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from approvals.schemas.workspace import Change, StandingPermission

IDEMPOTENCY_NAMESPACE = UUID("6f1d7c1e-3a0b-4c55-9d3e-4b8f1f0a9e21")


class Reads(Protocol):
    """The aggregates as a batch sees them (None: none stored yet)."""

    default_expiry_s: int  # the service's own, for a workspace that sets none

    def approval(self, approval_id: UUID) -> domain.Approval | None: ...
    def workspace(self, workspace_id: str) -> governance.Workspace | None: ...
    def budget(self, workspace_id: str, period: str) -> budget.Budget | None: ...
    def allowance(self, workspace_id: str, rule: str, day: str) -> governance.Allowance | None: ...
    def api_key(self, workspace_id: str, key_id: str) -> apikeys.ApiKey | None: ...
    def grant(self, slot: UUID) -> grants.Grant | None: ...
    def passkey(self, workspace_id: str, credential_id: str) -> passkeys.Passkey | None: ...
    def passkey_counter(self, workspace_id: str, credential_id: str) -> passkeys.Counter | None: ...
    def requester_count(
        self, workspace_id: str, requester: str
    ) -> ratelimit.RequesterCount | None: ...


class Decision(NamedTuple):
    """What a command decided: its events, and what its reply shows (the approval and the
    workspace as they are once the events are folded in)."""

    outcome: str
    events: list[Any]
    approval_id: UUID | None = None
    with_workspace: bool = False
    replayed: bool = False
    policy: PolicyInfo | None = None
    changes: tuple[Change, ...] | None = None


def _governing(reads: Reads, workspace_id: str) -> governance.Workspace:
    return governance.require_workspace(reads.workspace(workspace_id), workspace_id)


def _period_budget(reads: Reads, ws: governance.Workspace, now: datetime) -> budget.Budget | None:
    """This period's budget, where the workspace has one (None too when nothing is held yet)."""
    limits = ws.settings.budget
    if limits is None:
        return None
    return reads.budget(ws.workspace_id, budget.period_of(limits.period, now))


# -- workspaces and keys --------------------------------------------------------------------


def configure(reads: Reads, workspace_id: str, cmd: commands.Configure, now: datetime) -> Decision:
    configured = governance.configure(reads.workspace(workspace_id), workspace_id, cmd, now)
    if configured is None:  # already in force
        return Decision("configured", [], with_workspace=True, changes=())
    return Decision("configured", [configured], with_workspace=True, changes=configured.changes)


def delegate(reads: Reads, workspace_id: str, cmd: commands.Delegate, now: datetime) -> Decision:
    delegated = governance.delegate(_governing(reads, workspace_id), cmd, now)
    return Decision("delegated", [delegated], with_workspace=True)


def create_api_key(
    reads: Reads, workspace_id: str, cmd: commands.CreateApiKey, now: datetime
) -> Decision:
    ws = _governing(reads, workspace_id)
    created = apikeys.create(ws, reads.api_key(workspace_id, cmd.key_id), cmd, now)
    return Decision("api_key_created", [created])


def register_passkey(
    reads: Reads, workspace_id: str, cmd: commands.RegisterPasskey, now: datetime
) -> Decision:
    ws = _governing(reads, workspace_id)
    registered = passkeys.register(ws, cmd, now)
    existing = reads.passkey(workspace_id, registered.credential_id)
    if existing is not None:
        raise Conflict("this passkey is registered already", credential_id=existing.credential_id)
    return Decision("passkey_registered", [registered])


def remove_passkey(
    reads: Reads, workspace_id: str, cmd: commands.RemovePasskey, now: datetime
) -> Decision:
    ws = _governing(reads, workspace_id)
    existing = reads.passkey(workspace_id, cmd.credential_id)
    return Decision("passkey_removed", [passkeys.remove(ws, existing, cmd, now)])


def revoke_api_key(
    reads: Reads, workspace_id: str, cmd: commands.RevokeApiKey, now: datetime
) -> Decision:
    ws = _governing(reads, workspace_id)
    revoked = apikeys.revoke(ws, reads.api_key(workspace_id, cmd.key_id), cmd, now)
    return Decision("api_key_revoked", [revoked])


# -- requests -------------------------------------------------------------------------------


def request(reads: Reads, workspace_id: str, cmd: commands.Request, now: datetime) -> Decision:
    """Ask (or, for ``check``, only say whether asking would be needed): refused, not required,
    the same request again (idempotency key), approved at once by a standing permission, or
    waiting for a person."""
    ws = _governing(reads, workspace_id)
    governance.may_request(ws, cmd)
    answer = policy.evaluate(cmd.action)
    quorum = ws.settings.quorum_for(cmd.risk_level)
    rule = governance.standing_rule(ws, cmd) if answer.required else None
    info = PolicyInfo(required=answer.required, row=answer.row, reason=answer.reason,
                      standing_rule=rule.name if rule else None,
                      quorum=quorum if answer.required else None)  # fmt: skip
    if not answer.required:
        return Decision("not_required", [], policy=info)
    if isinstance(cmd, commands.Check):
        return _check(reads, ws, cmd, now, info, quorum)
    if cmd.idempotency_key is None:
        approval_id = uuid4()
    else:
        approval_id = uuid5(IDEMPOTENCY_NAMESPACE, f"{workspace_id}\x00{cmd.idempotency_key}")
        existing = reads.approval(approval_id)
        if existing is not None:
            domain.request_again(existing, cmd)
            return Decision("approval_required", [], approval_id, replayed=True, policy=info)
    _admit(reads, ws, cmd, now)
    requested = domain.request(
        cmd, approval_id=approval_id, workspace_id=workspace_id, now=now, quorum=quorum,
        default_expiry_s=ws.settings.default_expiry_s or reads.default_expiry_s,
        resume_signed=ws.settings.resume is not None,
    )  # fmt: skip
    granted = _at_once(reads, ws, requested, rule, now)
    if granted:
        return Decision("approved", [requested, *granted], approval_id, policy=info)
    info = msgspec.structs.replace(info, standing_rule=None)
    covered = _granted(reads, ws, domain.mutate(requested, None), now)
    if covered:
        return Decision("approved", [requested, *covered], approval_id, policy=info)
    counted = _counted(reads, ws, requested, now)
    return Decision("approval_required", [requested, *counted], approval_id, policy=info)


def _granted(
    reads: Reads, ws: governance.Workspace, approval: domain.Approval, now: datetime
) -> list[Any] | None:
    """The events of a grant approving the new request at once, if one covers it."""
    grant = reads.grant(grants.slot_of(approval.request))
    if grant is None:
        return None
    held = (
        _period_budget(reads, ws, now) if approval.request.action.max_credits is not None else None
    )
    return domain.approve_granted(approval, ws, grant, held, now)


def _check(
    reads: Reads,
    ws: governance.Workspace,
    cmd: commands.Check,
    now: datetime,
    info: PolicyInfo,
    quorum: int,
) -> Decision:
    """What ``request`` would answer, stored nowhere: refused (``spend_cap_exceeded`` with the
    numbers, as the request would be), approved at once (the rule in ``policy.standing_rule``),
    or waiting for a person. The request is decided in full, on a throwaway id, so the answer
    weighs what a request weighs: the rule's daily allowance and the budget."""
    _admit(reads, ws, cmd, now)
    requested = domain.request(
        cmd, approval_id=uuid4(), workspace_id=ws.workspace_id, now=now, quorum=quorum,
        default_expiry_s=ws.settings.default_expiry_s or reads.default_expiry_s,
        resume_signed=ws.settings.resume is not None,
    )  # fmt: skip
    if _at_once(reads, ws, requested, governance.standing_rule(ws, cmd), now):
        return Decision("approved_at_once", [], policy=info)
    if _granted(reads, ws, domain.mutate(requested, None), now):  # a grant covers it
        return Decision("approved_at_once", [], policy=msgspec.structs.replace(info,
                        standing_rule=None))  # fmt: skip
    return Decision("approval_required", [], policy=msgspec.structs.replace(info,
                    standing_rule=None))  # fmt: skip


def _at_once(
    reads: Reads,
    ws: governance.Workspace,
    requested: events.Requested,
    rule: StandingPermission | None,
    now: datetime,
) -> list[Any] | None:
    """The events approving a new request at once, without a person, or None: a standing
    permission that covers it, within its day's allowance and the budget. (A grant made with a
    decision is weighed after it: ``_granted``; ``check`` asks both.)"""
    if rule is None:
        return None
    approval = domain.mutate(requested, None)
    allowance = reads.allowance(ws.workspace_id, rule.name, governance.allowance_day(now))
    held = _period_budget(reads, ws, now)  # a standing rule always names a ceiling
    return domain.approve_standing(approval, ws, rule, allowance, held, now)


def _admit(reads: Reads, ws: governance.Workspace, cmd: commands.Request, now: datetime) -> None:
    """Refuse a ceiling the budget can never take; the period's budget is read only then (it is
    a fold of the period's reservations: too dear for every request)."""
    limits, ceiling = ws.settings.budget, cmd.action.max_credits
    if limits is None or budget.never_fits(limits, ceiling) is None:
        return
    budget.admit(_period_budget(reads, ws, now), limits, ceiling, now)


def _counted(
    reads: Reads, ws: governance.Workspace, requested: events.Requested, now: datetime
) -> list[events.RequestCounted]:
    """A request that will prompt a person, counted against its requester's limits (raises
    RateLimited over them); nothing to count without limits."""
    limits = ws.settings.limits
    if limits is None:
        return []
    count = reads.requester_count(ws.workspace_id, requested.requested_by)

    def still_pending(approval_id: UUID) -> bool:
        approval = reads.approval(approval_id)
        return approval is not None and approval.status == "pending"

    return [ratelimit.admit(count, limits, requested, still_pending, now)]


# -- an approval's life ---------------------------------------------------------------------


def _approval(
    reads: Reads, workspace_id: str, approval_id: UUID
) -> tuple[domain.Approval, governance.Workspace]:
    approval = reads.approval(approval_id)
    if approval is None or approval.workspace_id != workspace_id:
        raise NotFound("no such approval", approval_id=str(approval_id))
    return approval, _governing(reads, workspace_id)


def _decided(approval: domain.Approval, produced: list[Any]) -> Decision:
    """The outcome is the type of the approval's own last event (a budget's may follow it)."""
    mine = [e for e in produced if isinstance(e, events.Event)]
    return Decision(mine[-1].event_type, produced, approval.id)


def _credential(
    reads: Reads, workspace_id: str, cmd: commands.Approve | commands.Reject
) -> passkeys.Passkey | None:
    """The stored credential a decision's passkey assertion names, if it names one."""
    if cmd.passkey is None:
        return None
    credential_id = cmd.passkey.credential_id
    credential = reads.passkey(workspace_id, credential_id)
    if credential is None:
        return None
    return passkeys.with_counter(credential, reads.passkey_counter(workspace_id, credential_id))


def _signed(credential: passkeys.Passkey | None, decided: Any, now: datetime) -> list[Any]:
    """The credential's use, saved with the decision it signed (its counter moves forward)."""
    signed = getattr(decided, "passkey", None)
    if credential is None or signed is None:
        return []
    return [passkeys.used(credential, signed, decided.approval_id, now)]


def approve(reads: Reads, workspace_id: str, cmd: commands.Approve, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    if cmd.grant is not None and ws.settings.passkey_required(approval.request.risk_level):
        raise Forbidden(
            "a request that needs a passkey cannot grant similar requests in advance: each "
            "decision is signed by its own person", rule="grants:passkeys",
        )  # fmt: skip
    credential = _credential(reads, workspace_id, cmd)
    produced: list[Any] = domain.approve(approval, cmd, now, ws, credential)
    used = _signed(credential, produced[-1], now)
    if isinstance(produced[-1], events.Approved):  # the vote that met the quorum
        ceiling = (produced[-1].action or approval.request.action).max_credits  # after edits
        held = _period_budget(reads, ws, now) if ceiling is not None else None
        produced = budget.grant(held, ws.settings.budget, produced[-1], ceiling, now)
    if cmd.grant is not None:
        if not isinstance(produced[0], events.Approved):
            raise Forbidden(
                "a request that needs several approvals cannot be granted in advance by one "
                "person", rule="grants:quorum", quorum=approval.request.quorum,
            )  # fmt: skip
        slot = reads.grant(grants.slot_of(approval.request))
        produced.append(grants.give(slot, ws, produced[0], approval.request, cmd.grant, now))
    return _decided(approval, [*produced, *used])


def revoke_grant(
    reads: Reads, workspace_id: str, cmd: commands.RevokeGrant, now: datetime
) -> Decision:
    """End a grant; it is found through the approval it was given with (its id)."""
    ws = _governing(reads, workspace_id)
    approval = reads.approval(cmd.grant_id)
    if approval is None or approval.workspace_id != workspace_id:
        raise NotFound("no such grant", grant_id=str(cmd.grant_id), kind="grant")
    revoked = grants.revoke(reads.grant(grants.slot_of(approval.request)), ws, cmd, now)
    return Decision("grant_revoked", [revoked])


def reject(reads: Reads, workspace_id: str, cmd: commands.Reject, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    credential = _credential(reads, workspace_id, cmd)
    rejected = domain.reject(approval, cmd, now, ws, credential)
    return _decided(approval, [rejected, *_signed(credential, rejected, now)])


def respond(reads: Reads, workspace_id: str, cmd: commands.Respond, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.respond(approval, cmd, now, ws)])


def cancel(reads: Reads, workspace_id: str, cmd: commands.Cancel, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.cancel(approval, cmd, now, ws)])


def expire(reads: Reads, workspace_id: str, cmd: commands.Expire, now: datetime) -> Decision:
    approval, _ = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.expire(approval, cmd, now)])


def deliver(reads: Reads, workspace_id: str, cmd: commands.Deliver, now: datetime) -> Decision:
    approval, _ = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.deliver(approval, cmd, now)])


def redeem(reads: Reads, workspace_id: str, cmd: commands.Redeem, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    governance.require_role(ws, cmd.executor, "requester", "redeem an approval")
    return _decided(approval, [domain.redeem(approval, cmd, now)])


def report(reads: Reads, workspace_id: str, cmd: commands.Report, now: datetime) -> Decision:
    """The run's report, and its reservation replaced by what it used."""
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    governance.require_role(ws, cmd.by, "requester", "report a run")
    produced: list[Any] = [domain.report(approval, cmd, now)]
    if approval.budget_period is not None:
        held = reads.budget(workspace_id, approval.budget_period)
        settled = budget.settle(held, approval.id, cmd.credits_used, now) if held else None
        produced += [settled] if settled else []
    return _decided(approval, produced)


def remind(reads: Reads, workspace_id: str, cmd: commands.Remind, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.remind(approval, cmd, now, ws.settings.reminders)])


def escalate(reads: Reads, workspace_id: str, cmd: commands.Escalate, now: datetime) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    return _decided(approval, [domain.escalate(approval, cmd, now, ws.settings.reminders)])


def check_spend(
    reads: Reads, workspace_id: str, cmd: commands.CheckSpend, now: datetime
) -> Decision:
    approval, ws = _approval(reads, workspace_id, cmd.approval_id)
    held = _period_budget(reads, ws, now)
    verdict = budget.check(held, ws.settings.budget, approval.request.action.max_credits, now)
    return _decided(approval, [domain.check_spend(approval, cmd, now, verdict)])


def release(reads: Reads, workspace_id: str, cmd: commands.Release, now: datetime) -> Decision:
    approval, _ = _approval(reads, workspace_id, cmd.approval_id)
    held = reads.budget(workspace_id, domain.releasable(approval, now))
    released = budget.release(held, approval.id, now) if held else None
    if released is None:
        raise Conflict("the approval holds no credits", rule="nothing_held")
    return Decision("released", [released], approval.id)


VERBS: dict[type[commands.Command], Callable[[Reads, str, Any, datetime], Decision]] = {
    commands.Request: request,
    commands.Check: request,  # its dry twin: nothing is stored
    commands.Approve: approve,
    commands.Reject: reject,
    commands.Cancel: cancel,
    commands.Expire: expire,
    commands.Deliver: deliver,
    commands.Configure: configure,
    commands.Delegate: delegate,
    commands.Redeem: redeem,
    commands.Report: report,
    commands.CheckSpend: check_spend,
    commands.Remind: remind,
    commands.Escalate: escalate,
    commands.Release: release,
    commands.CreateApiKey: create_api_key,
    commands.RevokeApiKey: revoke_api_key,
    commands.RevokeGrant: revoke_grant,
    commands.Respond: respond,
    commands.RegisterPasskey: register_passkey,
    commands.RemovePasskey: remove_passkey,
}
