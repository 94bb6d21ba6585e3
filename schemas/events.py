"""Events: what happened (past tense). Stored in the event store and published on the bus.

Stored topics are ``schemas.events:<ClassName>``: never move or rename a class once events of it
are stored. New fields always get defaults; a change of shape is a new ``schema_version``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from schemas.commands import Action
from schemas.types import Actor, RiskLevel

SCHEMA_VERSION = 1


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries."""

    event_id: UUID
    approval_id: UUID
    version: int
    workspace_id: str
    occurred_at: datetime
    actor: Actor
    trace_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    # eventsourcing's DomainEventProtocol
    @property
    def originator_id(self) -> UUID:
        return self.approval_id

    @property
    def originator_version(self) -> int:
        return self.version

    @property
    def event_type(self) -> str:
        return str(type(self).__struct_config__.tag)


class Requested(Event, frozen=True, kw_only=True, tag="requested"):
    requested_by: Actor
    skill_name: str
    skill_execution_id: str
    title: str
    summary: str
    risk_level: RiskLevel
    action: Action
    digest: str
    expires_at: datetime
    idempotency_key: str | None = None
    on_behalf_of: str | None = None
    proposed_payload: Any = None


class Delivered(Event, frozen=True, kw_only=True, tag="delivered"):
    channel: str
    target: str
    external_ref: str | None = None


class Approved(Event, frozen=True, kw_only=True, tag="approved"):
    digest: str
    reason: str | None = None


class Rejected(Event, frozen=True, kw_only=True, tag="rejected"):
    reason: str | None = None
    rerun: bool = False


class Expired(Event, frozen=True, kw_only=True, tag="expired"):
    pass


class Cancelled(Event, frozen=True, kw_only=True, tag="cancelled"):
    reason: str | None = None


AnyEvent = Requested | Delivered | Approved | Rejected | Expired | Cancelled
EVENT_TYPES: tuple[type[Event], ...] = (
    Requested,
    Delivered,
    Approved,
    Rejected,
    Expired,
    Cancelled,
)
