"""Deciding several approvals from the web inbox: the rows a person ticked (or every pending row
the filter shows), each sent as its own command bound to the digest the page showed, and a page
that says what became of each."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import post
from litestar.response import Template

from approvals.schemas.codec import reply_error
from approvals.schemas.commands import Via
from approvals.schemas.http import DecisionItem
from approvals.services.gateway import decisions
from approvals.services.gateway.bus import GatewayError
from approvals.services.gateway.web import (
    INBOX_LIMIT,
    AnyRequest,
    WorkspacePath,
    _bus,
    _identity,
    member_in,
)

if TYPE_CHECKING:
    from approvals.schemas.http import ItemResult


def _item(value: str) -> DecisionItem:
    approval_id, _, digest = value.partition(":")
    return msgspec.convert({"approval_id": approval_id, "digest": digest or None}, DecisionItem)


def selected(values: list[str]) -> list[DecisionItem]:
    """The ticked rows: each ``<approval id>:<digest>``, as the inbox wrote it."""
    try:
        return [_item(value) for value in values]
    except msgspec.ValidationError:
        raise GatewayError("invalid", "a selected row is malformed: reload the inbox") from None


async def _titles(request: AnyRequest, workspace: str, results: list[ItemResult]) -> list[str]:
    """Each item's title as the status view holds it (empty for one this workspace lacks)."""
    bus = _bus(request)

    async def title(result: ItemResult) -> str:
        data = await bus.query(workspace, "get", {"approval_id": result.approval_id})
        return str(msgspec.json.decode(data)["approval"]["title"]) if not reply_error(data) else ""

    return list(await asyncio.gather(*(title(result) for result in results)))


@post("/workspaces/{workspace:str}/approvals/decisions", status_code=200)
async def decide_selected(request: AnyRequest, workspace: WorkspacePath) -> Template:
    """Approve or reject the ticked rows; the page lists each row's result."""
    person, member = await member_in(request, workspace)
    form = await request.form()
    decision = str(form.get("decision", ""))
    if decision not in ("approve", "reject"):
        raise GatewayError("invalid", "choose approve or reject")
    items = selected([str(value) for value in form.getall("item", [])])
    context: dict[str, Any] = {"person": person, "member": member, "workspace": workspace,
                               "decision": decision, "results": [], "titles": []}  # fmt: skip
    if not items:
        return Template("decided.html", status_code=400, context={**context, "error": "Select at "
                        "least one pending approval first."})  # fmt: skip
    decisions.check_items(items, decision, limit=INBOX_LIMIT)
    via = Via(channel="web", auth="session", ref=_identity(request).method(request))
    reason, rerun = str(form.get("reason", "")).strip() or None, form.get("rerun") == "on"
    bodies = [decisions.command_body(item, decision, person, via, reason, rerun, None)
              for item in items]  # fmt: skip
    results = await decisions.decide_each(_bus(request), workspace, decision, bodies)
    titles = await _titles(request, workspace, results)
    return Template("decided.html", context={**context, "results": results, "titles": titles,
                                             "error": None})  # fmt: skip


HANDLERS = [decide_selected]
