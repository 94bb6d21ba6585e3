"""How every aggregate the command service keeps evolves: one table from event type to the
function that folds it into its aggregate (approvals, workspaces' settings, standing allowances,
budgets, API keys, grants). The command service, its loader and the auditors' replay all
fold with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from approvals.schemas import events
from approvals.services.approvals import (
    apikeys,
    budget,
    domain,
    governance,
    grants,
    passkeys,
    ratelimit,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def evolve(current: Any, event: Any) -> Any:
    """Any aggregate's next state after one of its events."""
    return EVOLVERS[type(event)](event, current)


def project(current: Any, history: Iterable[Any]) -> Any:
    """Any aggregate's state after its ``history`` (None: nothing stored yet)."""
    for event in history:
        current = EVOLVERS[type(event)](event, current)
    return current


def _aggregate(mutator: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda event, current: mutator(current, event)


# The approval's events by the domain's own dispatch, resolved once per type here: no chain of
# isinstance checks, and no dispatch lookup per event, on the replay path.
EVOLVERS: dict[type, Callable[[Any, Any], Any]] = {
    **{cls: domain.mutate.dispatch(cls) for cls in get_args(events.ApprovalEvent)},
    events.WorkspaceConfigured: _aggregate(governance.evolve_workspace),
    events.Delegated: _aggregate(governance.evolve_workspace),
    events.StandingUsed: _aggregate(governance.evolve_allowance),
    events.CreditsReserved: _aggregate(budget.evolve),
    events.CreditsSettled: _aggregate(budget.evolve),
    events.CreditsReleased: _aggregate(budget.evolve),
    events.ApiKeyCreated: _aggregate(apikeys.evolve),
    events.ApiKeyRevoked: _aggregate(apikeys.evolve),
    events.GrantGiven: _aggregate(grants.evolve),
    events.GrantUsed: _aggregate(grants.evolve),
    events.GrantRevoked: _aggregate(grants.evolve),
    events.RequestCounted: _aggregate(ratelimit.evolve),
    events.PasskeyRegistered: _aggregate(passkeys.evolve),
    events.PasskeyRemoved: _aggregate(passkeys.evolve),
    events.PasskeyUsed: _aggregate(passkeys.evolve_counter),
}
