"""A workspace's spend cap: credits committed per period, reserved when an approval is granted.

Pure, like the domain. A budget is one aggregate per workspace and period (``2026-11`` for a
month, ``2026-W47`` for a week, ``2026-11-22`` for a day), so a new period starts at zero by
construction. The reservation is saved in the same transaction as the approval it belongs to,
and the aggregate's version makes two concurrent reservations conflict: the loser is decided
again against the winner's total, so committed credits never pass the cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import events
from approvals.services.approvals.errors import SpendCapExceeded

if TYPE_CHECKING:
    from datetime import datetime

    from approvals.schemas.workspace import Budget as BudgetSettings

ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
BUDGET_NAMESPACE = UUID("5d2f8c1a-9e4b-4a7c-8b3d-6f1e2a3c4d5e")


def period_of(period: str, now: datetime) -> str:
    if period == "day":
        return now.date().isoformat()
    if period == "week":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{now.year}-{now.month:02d}"


def budget_key(workspace_id: str, period: str) -> UUID:
    return uuid5(BUDGET_NAMESPACE, f"budget\x00{workspace_id}\x00{period}")


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    workspace_id: str
    period: str
    committed: float
    cap: float  # the cap when last reserved against
    reservations: dict[UUID, float]  # approvals whose ceiling is held, not yet settled


def reserve(
    budget: Budget | None,
    limits: BudgetSettings,
    workspace_id: str,
    approval_id: UUID,
    credits: float,
    now: datetime,
) -> events.CreditsReserved:
    """Commit ``credits`` for an approval being granted, or refuse with the numbers."""
    numbers = _numbers(budget, limits, credits, now)
    period, committed = numbers["period"], numbers["committed"]
    if limits.max_per_run is not None and credits > limits.max_per_run:
        raise SpendCapExceeded(
            f"the credit ceiling {credits:g} is over the workspace's per-run maximum "
            f"{limits.max_per_run:g}",
            rule="max_per_run",
            max_per_run=limits.max_per_run,
            **numbers,
        )
    if committed + credits > limits.cap:
        raise SpendCapExceeded(
            f"approving would commit {committed + credits:g} credits in {period}, over the cap "
            f"of {limits.cap:g} ({max(0.0, limits.cap - committed):g} remain)",
            rule="cap",
            **numbers,
        )
    return events.CreditsReserved(
        event_id=uuid4(),
        aggregate_id=budget_key(workspace_id, period),
        version=(budget.version if budget else 0) + 1,
        workspace_id=workspace_id,
        occurred_at=now,
        actor="service:approvals",
        period=period,
        approval_id=approval_id,
        credits=credits,
        committed=committed + credits,
        cap=limits.cap,
    )


def grant(
    budget: Budget | None,
    limits: BudgetSettings | None,
    approved: events.Approved,
    ceiling: float | None,
    now: datetime,
) -> list[events.Approved | events.CreditsReserved]:
    """An approval being granted, with its ceiling reserved against the period's budget in the
    same save (and the approval naming that period); raise SpendCapExceeded, nothing granted,
    when the cap cannot take it. Without a budget or a ceiling there is nothing to hold."""
    if limits is None or ceiling is None:
        return [approved]
    reserved = reserve(budget, limits, approved.workspace_id, approved.approval_id, ceiling, now)
    return [msgspec.structs.replace(approved, budget_period=reserved.period), reserved]


def _numbers(
    budget: Budget | None, limits: BudgetSettings, ceiling: float, now: datetime
) -> dict[str, Any]:
    """What a refusal shows: the period, its cap, what is committed and remains, the ceiling."""
    committed = budget.committed if budget else 0.0
    return {
        "period": budget.period if budget else period_of(limits.period, now),
        "cap": limits.cap,
        "committed": committed,
        "remaining": max(0.0, limits.cap - committed),
        "ceiling": ceiling,
    }


def settle(
    budget: Budget, approval_id: UUID, used: float, now: datetime
) -> events.CreditsSettled | None:
    """Replace an approval's reservation with what its run used (None if nothing is held)."""
    reserved = budget.reservations.get(approval_id)
    if reserved is None:
        return None
    after = budget.committed - reserved + used
    return _next(budget, events.CreditsSettled, now, "service:approvals", approval_id,
                 reserved=reserved, used=used, committed=after)  # fmt: skip


def release(budget: Budget, approval_id: UUID, now: datetime) -> events.CreditsReleased | None:
    """Give back an approval's reservation (None if nothing is held for it)."""
    reserved = budget.reservations.get(approval_id)
    if reserved is None:
        return None
    return _next(budget, events.CreditsReleased, now, "service:spendcap", approval_id,
                 credits=reserved, committed=budget.committed - reserved)  # fmt: skip


B = TypeVar("B", events.CreditsSettled, events.CreditsReleased)


def _next(
    budget: Budget, cls: type[B], now: datetime, actor: str, approval_id: UUID, **fields: Any
) -> B:
    return cls(
        event_id=uuid4(), aggregate_id=budget.id, version=budget.version + 1,
        workspace_id=budget.workspace_id, occurred_at=now, actor=actor, period=budget.period,
        approval_id=approval_id, cap=budget.cap, **fields,
    )  # fmt: skip


class Never(NamedTuple):
    """Why a ceiling can never be approved: the rule (``max_per_run`` or ``cap``) and a reason."""

    rule: str
    reason: str


def never_fits(limits: BudgetSettings | None, ceiling: float | None) -> Never | None:
    """Whether ``ceiling`` is over what the limits allow any one approval, whatever is spent."""
    if limits is None or ceiling is None:
        return None
    if limits.max_per_run is not None and ceiling > limits.max_per_run:
        limit = f"per-run maximum {limits.max_per_run:g}"
        return Never("max_per_run", f"the credit ceiling {ceiling:g} is over the workspace's "
                     f"{limit}: it can never be approved")  # fmt: skip
    if ceiling > limits.cap:
        limit = f"whole {ADJECTIVE[limits.period]} cap {limits.cap:g}"
        return Never("cap", f"the credit ceiling {ceiling:g} is over the workspace's "
                     f"{limit}: it can never be approved")  # fmt: skip
    return None


def admit(
    budget: Budget | None, limits: BudgetSettings | None, ceiling: float | None, now: datetime
) -> None:
    """Refuse a request, when it comes in, whose ceiling can never be approved, with the numbers
    (``budget`` is the current period's, for what is committed and remains): nothing is stored
    for it, rather than a pending request that the spend-cap service rejects a moment later."""
    never = never_fits(limits, ceiling)
    if never is None or limits is None or ceiling is None:
        return
    numbers = _numbers(budget, limits, ceiling, now)
    raise SpendCapExceeded(never.reason, rule=never.rule, max_per_run=limits.max_per_run,
                           **numbers)  # fmt: skip


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """A request's ceiling against its workspace's budget, when it comes in."""

    picture: events.SpendPicture
    never: str | None = None  # why it can never be approved, if it cannot


def check(
    budget: Budget | None, limits: BudgetSettings | None, ceiling: float | None, now: datetime
) -> Verdict:
    """The budget picture for a reviewer, and whether the ceiling could ever fit (the limits
    may have changed since the request was admitted)."""
    if limits is None:
        return Verdict(picture=events.SpendPicture(ceiling=ceiling))
    committed = budget.committed if budget else 0.0
    remaining = max(0.0, limits.cap - committed)
    picture = events.SpendPicture(
        period=budget.period if budget else period_of(limits.period, now),
        cap=limits.cap,
        max_per_run=limits.max_per_run,
        committed=committed,
        remaining=remaining,
        ceiling=ceiling,
        fits=ceiling is None or ceiling <= remaining,
    )
    never = never_fits(limits, ceiling)
    return Verdict(picture=picture, never=never.reason if never else None)


def evolve(budget: Budget | None, event: events.BudgetEvent) -> Budget:
    held = dict(budget.reservations) if budget else {}
    if isinstance(event, events.CreditsReserved):
        held[event.approval_id] = event.credits
    else:
        held.pop(event.approval_id, None)
    return Budget(
        id=event.aggregate_id,
        version=event.version,
        workspace_id=event.workspace_id,
        period=event.period,
        committed=event.committed,
        cap=event.cap,
        reservations=held,
    )
