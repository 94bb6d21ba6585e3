"""``approvals approve`` and ``reject`` of several approvals: explicit ids, or ``--all-matching``
the list filters. The CLI shows what it would decide (each approval's current digest, fetched
from the status view) and asks before it sends anything; each item is then its own command bound
to the digest shown, so every rule applies to it alone, and each item's result is printed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click
import msgspec

from approvals.schemas import queries
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.http import DecisionsReply, ItemResult
from approvals.schemas.replies import ErrorBody
from approvals.services.cli.filters import utc

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient
    from approvals.schemas.queries import ApprovalView
    from approvals.services.cli import Context

IN_FLIGHT = 8  # commands outstanding at once
MOST_MATCHING = 1000  # --all-matching refuses more than this: narrow the filters


class Decide(msgspec.Struct, frozen=True, kw_only=True):
    """What the person asked for: the decision, and who makes it with which words."""

    decision: str  # approve, reject
    approver: str
    reason: str | None = None
    rerun: bool = False
    for_member: str | None = None


async def by_ids(client: ApprovalsClient, ids: tuple[str, ...]) -> list[ApprovalView | str]:
    """Each id's view as it stands now, or the id itself where this workspace has none."""

    async def one(approval_id: str) -> ApprovalView | str:
        data = await client.query("get", {"approval_id": approval_id})
        if reply_error(data):
            return approval_id
        return msgspec.json.decode(data, type=queries.ViewReply).approval

    return list(await asyncio.gather(*(one(approval_id) for approval_id in ids)))


async def matching(client: ApprovalsClient, filters: dict[str, Any]) -> list[ApprovalView]:
    """Every pending approval the filters match, oldest first."""
    body = {k: utc(v) for k, v in filters.items() if v is not None}
    body.update(status="pending", order="oldest", limit=500)
    found: list[ApprovalView] = []
    while True:
        data = await client.query("list", body)
        if error := reply_error(data):
            raise click.ClickException(f"{error.code}: {error.message}")
        page = msgspec.json.decode(data, type=queries.ListReply)
        found.extend(page.items)
        if len(found) > MOST_MATCHING:
            raise click.UsageError(f"more than {MOST_MATCHING} pending approvals match: narrow "
                                   "the filters")  # fmt: skip
        if page.next_cursor is None:
            return found
        body["cursor"] = page.next_cursor


def preview(decide: Decide, chosen: list[ApprovalView | str]) -> None:
    """The table of what would be decided, with the digest each command will be bound to."""
    rows = [("ID", "STATUS", "RISK", "REQUESTED BY", "TITLE", "DIGEST")]
    for view in chosen:
        if isinstance(view, str):
            rows.append((view, "not found", "", "", "", ""))
        else:
            rows.append((str(view.id), view.status, view.risk_level, view.requested_by,
                         view.title[:40], view.digest))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _body(decide: Decide, view: ApprovalView) -> dict[str, Any]:
    body: dict[str, Any] = {"approval_id": str(view.id), "approver": decide.approver}
    if decide.decision == "approve":
        body["digest"] = view.digest  # what the preview showed, not whatever is current later
    else:
        body["rerun"] = decide.rerun
    if decide.reason:
        body["reason"] = decide.reason
    if decide.for_member:
        body["for_member"] = decide.for_member
    return body


async def send_each(
    client: ApprovalsClient, decide: Decide, chosen: list[ApprovalView | str]
) -> list[ItemResult]:
    """Each item's own command and its result, in order; an id not found is never sent."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(view: ApprovalView | str) -> ItemResult:
        if isinstance(view, str):
            missing = ErrorBody(code="not_found", message="no such approval in this workspace")
            return ItemResult(approval_id=view, ok=False, error=missing)  # type: ignore[arg-type]
        async with gate:
            reply = await client.send(decide.decision, _body(decide, view))  # type: ignore[arg-type]
        if not reply.ok:
            return ItemResult(approval_id=view.id, ok=False, error=reply.error)
        status = reply.approval.status if reply.approval else None
        return ItemResult(approval_id=view.id, ok=True, outcome=reply.outcome, status=status)

    return list(await asyncio.gather(*(one(view) for view in chosen)))


def print_results(as_json: bool, results: list[ItemResult]) -> None:
    if as_json:
        click.echo(encoder.encode(DecisionsReply(results=results)).decode())
        return
    for result in results:
        if result.ok:
            click.echo(f"{result.approval_id}  {result.outcome}")
        else:
            assert result.error is not None
            click.echo(f"{result.approval_id}  error [{result.error.code}]: "
                       f"{result.error.message}")  # fmt: skip
    done = sum(result.ok for result in results)
    click.echo(f"{done} of {len(results)} decided")


def _confirm(question: str) -> bool:
    """``[y/N]``: anything but yes, or no answer at all (stdin closed), decides nothing."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        return False


def decide_many(
    obj: Context, decide: Decide, ids: tuple[str, ...], filters: dict[str, Any] | None, yes: bool
) -> None:
    """Choose, show, confirm, send each, report each. Exit 0 when every item was decided."""

    async def work(client: ApprovalsClient) -> int:
        chosen: list[ApprovalView | str] = []
        chosen += await (by_ids(client, ids) if filters is None else matching(client, filters))
        if not chosen:
            print_results(obj.as_json, [])
            return 0
        if not obj.as_json:
            preview(decide, chosen)
        if not yes:
            count = sum(not isinstance(view, str) for view in chosen)
            asked = f"{decide.decision.capitalize()} {count} approvals?"
            if not await asyncio.to_thread(_confirm, asked):
                click.echo("Nothing was decided.")
                return 1
        results = await send_each(client, decide, chosen)
        print_results(obj.as_json, results)
        return 0 if all(result.ok for result in results) else 1

    obj.run(work)
