"""What requires approval: the seed's table (finer rules come with workspace policy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.commands import Action


def requires_approval(action: Action) -> bool:
    """Reads and anything that is not live (dry_run, smoke_test) never need a human."""
    return action.kind != "read" and action.mode == "live"
