"""The review queue: hand a reviewer the oldest pending request they may decide, held for them
for a while so that two reviewers are not given the same one.

A hold is a key ``<workspace>.<approval id>`` in the JetStream key-value bucket
``approvals_review_leases``, created only if absent (so exactly one reviewer gets it) and gone
when the bucket's age limit passes. Deciding goes through the command service as ever: a hold
is a courtesy between reviewers, never a permission.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from approvals.schemas import subjects
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.types import RiskLevel
from approvals.schemas.workspace import WorkspaceSettings
from approvals.services.approvals import governance
from approvals.services.approvals.errors import Forbidden
from approvals.services.runtime.bus import ensure_kv

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

LEASES_BUCKET = "approvals_review_leases"
HOLD_S = 120.0
PAGE = 50


async def leases(nc: Client) -> KeyValue:
    return await ensure_kv(nc.jetstream(), LEASES_BUCKET)


class Queued(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules read of a request in the status view's list (``governance.Asked``)."""

    workspace_id: str = ""
    requested_by: str
    on_behalf_of: str | None = None
    skill_name: str
    risk_level: RiskLevel


def may_review(settings: WorkspaceSettings, member: str, item: dict[str, Any]) -> bool:
    """Whether the workspace's rules would let ``member`` approve this request: governance's
    own check (the command service checks again when they decide)."""
    queued = msgspec.convert(item, Queued)
    try:
        governance.may_approve(settings, queued.workspace_id, member, queued)
    except Forbidden:
        return False
    return True


async def next_review(
    nc: Client, workspace: str, member: str, *, skill: str | None = None, timeout_s: float = 10.0
) -> dict[str, Any] | None:
    """The oldest pending request of ``workspace`` that ``member`` did not ask for (or act for)
    and nobody else holds, now held for ``member``; None when there is none."""
    held = await leases(nc)
    msg = await nc.request(subjects.query(workspace, "workspace"), b"{}", timeout=timeout_s)
    if reply_error(msg.data):
        return None
    found = msgspec.json.decode(msg.data)
    settings = msgspec.convert(found["workspace"]["settings"], WorkspaceSettings)
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"status": "pending", "order": "oldest", "limit": PAGE}
        if skill:
            query["skill_name"] = skill
        if cursor:
            query["cursor"] = cursor
        msg = await nc.request(subjects.query(workspace, "list"), encoder.encode(query),
                               timeout=timeout_s)  # fmt: skip
        if reply_error(msg.data):
            return None
        page = msgspec.json.decode(msg.data)
        for item in page["items"]:
            if not may_review(settings, member, item):
                continue
            key = f"{workspace}.{item['id']}"
            try:
                await held.create(key, member.encode())
                return item  # type: ignore[no-any-return]
            except KeyWrongLastSequenceError:
                entry = await held.get(key)
                if entry.value is not None and entry.value.decode() == member:
                    return item  # type: ignore[no-any-return]  # already held for them
        cursor = page.get("next_cursor")
        if not cursor:
            return None
