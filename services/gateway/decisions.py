"""Deciding many approvals at once, for the HTTP API and the web inbox.

There is no batch verb in the command service: each item is sent as its own ``approve`` or
``reject`` command, so every rule (the digest the person saw, separation of duties, quorum,
budget, the workspace the command is sent in) applies to it alone, and one item's refusal never
holds back another. The gateway fans the commands out a few at a time and collects each answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from approvals.schemas.codec import reply_error
from approvals.schemas.http import MAX_DECISIONS, ItemResult
from approvals.schemas.replies import ErrorBody
from approvals.schemas.types import Status
from approvals.services.gateway.bus import GatewayError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from approvals.schemas.commands import Via
    from approvals.schemas.http import DecisionItem
    from approvals.services.gateway.bus import Bus

IN_FLIGHT = 8  # commands outstanding at once: the command service batches them into few saves


class _Decided(msgspec.Struct, frozen=True):
    """What a decision's reply (read once ``reply_error`` found none) tells about its item."""

    outcome: str | None = None
    approval: _Approval | None = None


class _Approval(msgspec.Struct, frozen=True):
    status: Status


_decided = msgspec.json.Decoder(_Decided)


def check_items(items: Sequence[DecisionItem], decision: str, limit: int = MAX_DECISIONS) -> None:
    """Refuse the whole call, before anything is decided, when its items cannot all be sent."""
    if len(items) > limit:
        raise GatewayError("too_large", f"at most {limit} approvals in one call, not "
                           f"{len(items)}: split them", limit=limit, items=len(items))  # fmt: skip
    ids = [item.approval_id for item in items]
    repeated = sorted({str(i) for i in ids if ids.count(i) > 1})
    if repeated:
        raise GatewayError("invalid", "an approval is named twice", approval_ids=repeated)
    if decision == "approve":
        missing = [str(item.approval_id) for item in items if item.digest is None]
        if missing:
            raise GatewayError("invalid", "to approve, each item needs the digest the approver "
                               "was shown", approval_ids=missing)  # fmt: skip


def command_body(
    item: DecisionItem, decision: str, actor: str, via: Via, reason: str | None,
    rerun: bool, for_member: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The ``approve`` or ``reject`` command of one item, as ``actor`` by door ``via``."""
    body: dict[str, Any] = {"approval_id": item.approval_id, "approver": actor, "via": via}
    if decision == "approve":
        body["digest"] = item.digest
    else:
        body["rerun"] = rerun
    if reason:
        body["reason"] = reason
    if for_member:
        body["for_member"] = for_member
    return body


async def decide_each(
    bus: Bus, workspace: str, decision: str, bodies: Sequence[dict[str, Any]]
) -> list[ItemResult]:
    """Each command's answer, in the order of ``bodies``; a failure is that item's result."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: dict[str, Any]) -> ItemResult:
        approval_id: UUID = body["approval_id"]
        async with gate:
            try:
                data = await bus.command(workspace, decision, body)  # type: ignore[arg-type]
            except GatewayError as error:  # this item's command got no answer: say so, go on
                failed = ErrorBody(code=error.code, message=error.message)  # type: ignore[arg-type]
                return ItemResult(approval_id=approval_id, ok=False, error=failed)
        if refused := reply_error(data):
            return ItemResult(approval_id=approval_id, ok=False, error=refused)
        reply = _decided.decode(data)
        status = reply.approval.status if reply.approval else None
        return ItemResult(approval_id=approval_id, ok=True, outcome=reply.outcome, status=status)

    return list(await asyncio.gather(*(one(body) for body in bodies)))
