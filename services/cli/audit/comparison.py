"""The replay against the live read model: every replayed approval beside the status
projection's view of it (and back), field by field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import nats

from approvals.schemas.audit import Comparison, Difference
from approvals.schemas.queries import ListReply
from approvals.services.audit.replay import approval_state
from approvals.services.cli.audit import Refused

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from uuid import UUID

    from approvals.client import ApprovalsClient
    from approvals.schemas.audit import ApprovalState
    from approvals.schemas.queries import ApprovalView
    from approvals.services.audit.replay import Replay
    from approvals.services.cli import Context


async def compare(obj: Context, replay: Replay) -> Comparison:
    """Every replayed approval against the status projection's view of it (and back)."""
    replayed = {a.id: approval_state(a) for a in replay.approvals()}
    by_workspace: dict[str, list[Any]] = {}
    for state in replayed.values():
        by_workspace.setdefault(state.workspace_id, []).append(state)
    differences: list[Difference] = []
    compared = matching = 0
    for workspace in sorted(by_workspace):
        client = await obj.connect(workspace)
        try:
            seen: set[UUID] = set()
            async for view in all_views(client):
                if replay.approval_id is not None and view.id != replay.approval_id:
                    continue
                seen.add(view.id)
                mine = replayed.get(view.id)
                if mine is None:
                    differences.append(Difference(approval_id=view.id, workspace_id=workspace,
                                                  field="extra", replayed=None,
                                                  read_model=view.status))  # fmt: skip
                    continue
                compared += 1
                found = differences_of(workspace, mine, view)
                differences.extend(found)
                matching += not found
            differences.extend(
                Difference(
                    approval_id=state.id,
                    workspace_id=workspace,
                    field="missing",
                    replayed=state.status,
                    read_model=None,
                )
                for state in by_workspace[workspace]
                if state.id not in seen
            )
        finally:
            await client.close()
    return Comparison(compared=compared, matching=matching, differences=differences)


def differences_of(workspace: str, mine: ApprovalState, view: ApprovalView) -> list[Difference]:
    """The fields where the replayed approval and the read model's view of it differ."""
    return [
        Difference(
            approval_id=view.id,
            workspace_id=workspace,
            field=name,
            replayed=ours,
            read_model=theirs,
        )
        for name, ours, theirs in (
            ("status", mine.status, view.status),
            ("version", mine.version, view.version),
            ("votes", list(mine.votes), list(view.votes)),
            ("credits_used", mine.credits_used, view.credits_used),
        )
        if ours != theirs
    ]


async def all_views(client: ApprovalsClient) -> AsyncIterator[ApprovalView]:
    """Every approval of the client's workspace in the read model, oldest first, a page at a
    time."""
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"limit": 500, "order": "oldest"}
        if cursor:
            body["cursor"] = cursor
        try:
            data = await client.query("list", body)
        except (nats.errors.Error, TimeoutError) as error:
            raise Refused("unavailable", f"the read model does not answer ({error!r})") from None
        try:
            page = msgspec.json.decode(data, type=ListReply)
        except msgspec.ValidationError:
            raise Refused(
                "unavailable", f"the read model refused the list: {data.decode()[:300]}"
            ) from None
        for item in page.items:
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor
