"""The web inbox's grants page: the workspace's active grants, each with a Revoke button.

A grant is given from the approve form of the detail page (``grant_form`` reads its fields);
revoking is a POST with a CSRF token, like every decision."""

from __future__ import annotations

from urllib.parse import urlencode
from uuid import UUID

from litestar import get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from approvals.schemas.codec import reply_error
from approvals.services.gateway.web import (
    AnyRequest,
    Form,
    WorkspacePath,
    _bus,
    _identity,
    _json,
    _when,
    member_in,
)


@get("/workspaces/{workspace:str}/grants", name="grants")
async def grants_page(
    request: AnyRequest,
    workspace: WorkspacePath,
    error: FromQuery[str | None] = None,
    done: FromQuery[str | None] = None,
) -> Template:
    person, member = await member_in(request, workspace)
    data = await _bus(request).query(workspace, "grants", {})
    refused = reply_error(data)
    return Template("grants.html", context={
        "person": person, "member": member, "workspace": workspace,
        "grants": [] if refused else _json(data).get("grants", []), "when": _when,
        "error": error or (refused.message if refused else None), "done": done,
    })  # fmt: skip


@post("/workspaces/{workspace:str}/grants/{grant_id:uuid}/revoke", status_code=303)
async def revoke_grant(
    request: AnyRequest, workspace: WorkspacePath, grant_id: FromPath[UUID], data: Form
) -> Redirect:
    person, _ = await member_in(request, workspace)
    via = {"channel": "web", "auth": "session", "ref": _identity(request).method(request)}
    body = {"grant_id": grant_id, "by": person, "reason": data.get("reason") or None, "via": via}
    refused = reply_error(await _bus(request).command(workspace, "revoke_grant", body))
    query = {"error": f"{refused.code}: {refused.message}"[:300]} if refused else {
        "done": "revoked"}  # fmt: skip
    return Redirect(f"/workspaces/{workspace}/grants?{urlencode(query)}", status_code=303)


HANDLERS = [grants_page, revoke_grant]
