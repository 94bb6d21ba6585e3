"""Alerts on ``approvals.alerts.<workspace>.<kind>`` (core NATS, at least once: dedupe by id)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec


class BudgetAlert(msgspec.Struct, frozen=True, kw_only=True):
    """Committed credits rose to or past ``threshold`` percent of the period's cap."""

    alert_id: str  # <budget event id>:<threshold>; the same alert sent again has the same id
    workspace_id: str
    period: str
    threshold: Literal[80, 100]
    committed: float
    cap: float
    remaining: float
    percent_used: float
    approval_id: UUID  # the approval whose reservation or run moved the budget
    cause: str  # the budget event: credits_reserved, credits_settled or credits_released
    occurred_at: datetime
