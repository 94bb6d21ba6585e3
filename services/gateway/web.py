"""The web inbox: pending approvals per workspace, the detail page a reviewer decides on, sign-in,
the review queue, and server-sent events that keep open pages up to date.

Every page needs a signed-in person who is a member of the workspace; every state change is a
POST with a CSRF token (Litestar's CSRF middleware); a GET never changes state. Decisions work
without JavaScript; the script only refreshes the page's live part when the bus says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from approvals.schemas import subjects
from approvals.schemas.codec import event_decoder, reply_error
from approvals.schemas.events import Event
from approvals.schemas.upcasting import UnknownSchemaVersion
from approvals.services import reviews
from approvals.services.gateway import edit_form, inbox_groups
from approvals.services.gateway.bus import Bus, GatewayError
from approvals.services.gateway.grant_form import grant_terms
from approvals.services.gateway.identity import METHOD_KEY, SESSION_KEY, Identity, person_name
from approvals.services.runtime.signed_links import ConfirmTokens, LinkInvalid

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

WorkspacePath = FromPath[str]
ApprovalPath = FromPath[UUID]
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
# The approve form: "Edit, then approve" sends a row_id per checked row (a list when several).
EditForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
AnyRequest = Request[Any, Any, Any]
RISKS = ("low", "medium", "high", "critical")
KEEPALIVE_S = 15.0
INBOX_LIMIT = 200  # rows the inbox shows, and so the most one selection may decide


def _bus(request: AnyRequest) -> Bus:
    return request.app.state.bus  # type: ignore[no-any-return]


def _identity(request: AnyRequest) -> Identity:
    return request.app.state.identity  # type: ignore[no-any-return]


class SignInRequired(Exception):
    """No one is signed in: the handler sends the browser to the sign-in page."""


async def member_in(request: AnyRequest, workspace: str) -> tuple[str, str]:
    """The signed-in person and the member they are in ``workspace``; refuse anyone else."""
    person = _identity(request).person(request)
    if person is None:
        raise SignInRequired
    if not subjects.is_token(workspace):
        raise GatewayError("not_found", "no such workspace", workspace=workspace)
    member = (await _bus(request).memberships(person)).get(workspace)
    if member is None:
        raise GatewayError("forbidden", f"{person} is not a member of workspace {workspace}",
                           rule="member_of_workspace")  # fmt: skip
    return person, member


def _json(data: bytes) -> Any:
    return msgspec.json.decode(data)


# -- sign-in -------------------------------------------------------------------------------


@get("/", name="home")
async def home(request: AnyRequest) -> Template | Redirect:
    person = _identity(request).person(request)
    if person is None:
        return Redirect("/sign-in")
    workspaces = await _bus(request).memberships(person)
    counts = {}
    for workspace in workspaces:
        data = await _bus(request).query(workspace, "count", {"status": "pending"})
        counts[workspace] = 0 if reply_error(data) else _json(data).get("total", 0)
    return Template("home.html", context={"person": person, "workspaces": workspaces,
                                          "counts": counts})  # fmt: skip


def _local(path: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


@get("/sign-in", name="sign_in")
async def sign_in(request: AnyRequest, next: FromQuery[str | None] = None) -> Template:
    identity = _identity(request)
    context = {"dev": identity.dev_sign_in, "person": identity.person(request),
               "next": _local(next)}  # fmt: skip
    return Template("sign_in.html", context=context)


@post("/sign-in/dev", status_code=303)
async def dev_sign_in(request: AnyRequest, data: Form) -> Redirect:
    if not _identity(request).dev_sign_in:
        raise GatewayError("forbidden", "the development sign-in is off", rule="dev_sign_in")
    member = person_name(data.get("member", ""))
    if not 5 < len(member) <= 133:
        raise GatewayError("invalid", "name a member, such as user:ana")
    request.set_session({SESSION_KEY: member, METHOD_KEY: "dev"})
    return Redirect(_local(data.get("next")), status_code=303)


@get("/sign-in/link", name="sign_in_link")
async def sign_in_link(request: AnyRequest, token: FromQuery[str]) -> Template:
    """Show who the link signs in; the POST of this page signs in (a GET never does)."""
    try:
        member, _ = _identity(request).check_link(token)
        error = None
    except LinkInvalid as invalid:
        member, error = None, str(invalid)
    return Template("link.html", context={"member": member, "token": token, "error": error})


@post("/sign-in/link", status_code=303)
async def use_sign_in_link(request: AnyRequest, data: Form) -> Redirect | Template:
    try:
        member = await _identity(request).consume_link(data.get("token", ""))
    except LinkInvalid as invalid:
        return Template("link.html", status_code=403,
                        context={"member": None, "token": "", "error": str(invalid)})  # fmt: skip
    request.set_session({SESSION_KEY: member, METHOD_KEY: "link"})
    return Redirect("/", status_code=303)


@post("/sign-out", status_code=303)
async def sign_out(request: AnyRequest) -> Redirect:
    request.clear_session()
    return Redirect("/sign-in", status_code=303)


# -- the inbox and the detail page -------------------------------------------------------------


@get("/workspaces/{workspace:str}/approvals", name="inbox")
async def inbox(
    request: AnyRequest,
    workspace: WorkspacePath,
    status: FromQuery[str] = "pending",
    risk: FromQuery[str | None] = None,
    skill: FromQuery[str | None] = None,
    seen: FromQuery[str | None] = None,
    select: FromQuery[str | None] = None,
    requested_by: FromQuery[str | None] = None,
) -> Template:
    """``seen=<approval id>:<version>`` (the live script) waits for the view to hold that;
    ``select=all`` ticks every pending row shown (without a script)."""
    person, member = await member_in(request, workspace)
    if seen:
        approval_id, _, version = seen.partition(":")
        with contextlib.suppress(ValueError):
            caught_up = {"approval_id": str(UUID(approval_id)), "min_version": max(1, int(version))}
            await _bus(request).query(workspace, "get", caught_up)
    query: dict[str, Any] = {"limit": INBOX_LIMIT}
    if status in ("pending", "approved", "rejected", "expired", "cancelled", "responded"):
        query["status"] = status
    if risk in RISKS:
        query["risk_level"] = risk
    if skill:
        query["skill_name"] = skill[:200]
    if requested_by:
        query["requested_by"] = requested_by[:200]
    bus = _bus(request)
    page = _json(await bus.query(workspace, "list", query))
    counts = _json(await bus.query(workspace, "count", {}))
    items = page.get("items", [])
    return Template("inbox.html", context={
        "person": person, "member": member, "workspace": workspace, "items": items,
        "rows": inbox_groups.rows(items),
        "counts": counts.get("counts", {}), "total": counts.get("total", 0), "status": status,
        "risk": risk, "skill": skill or "", "risks": RISKS, "select_all": select == "all",
        "may_decide": await _is_approver(bus, workspace, member),
        "pending": sum(1 for a in items if a.get("status") == "pending"),
    })  # fmt: skip


async def _is_approver(bus: Bus, workspace: str, member: str) -> bool:
    ws = await bus.workspace(workspace)
    roles = ws.settings.members[member].roles if ws and member in ws.settings.members else ()
    return "approver" in roles


@get("/workspaces/{workspace:str}/approvals/{approval_id:uuid}", name="detail")
async def detail(
    request: AnyRequest,
    workspace: WorkspacePath,
    approval_id: ApprovalPath,
    min_version: FromQuery[int | None] = None,
    error: FromQuery[str | None] = None,
    done: FromQuery[str | None] = None,
) -> Template:
    person, member = await member_in(request, workspace)
    bus = _bus(request)
    query: dict[str, Any] = {"approval_id": approval_id}
    if min_version is not None and min_version > 0:
        query["min_version"] = min_version
    data = await bus.query(workspace, "get", query)
    if reply_error(data):
        raise GatewayError("not_found", "no such approval in this workspace")
    got = _json(data)
    timeline = _json(await bus.query(workspace, "history", {"approval_id": approval_id}))
    entries = timeline.get("timeline", [])
    requested = entries[0]["event"] if entries else {}
    ws = await bus.workspace(workspace)
    roles = ws.settings.members[member].roles if ws and member in ws.settings.members else ()
    # The view's ``spend`` was taken when the request came in: the budget now is shown beside it.
    budget = await bus.query(workspace, "budget", {})
    return Template("detail.html", context={
        "person": person, "member": member, "workspace": workspace, "approval": got["approval"],
        "budget_now": None if reply_error(budget) else _json(budget).get("budget"),
        "requested": requested, "action": requested.get("action", {}), "timeline": entries,
        "pretty": _pretty, "when": _when, "error": error, "done": done,
        "may_decide": "approver" in roles, **_edit_context(got["approval"], requested),
        "passkey": bool(ws and ws.settings.passkey_required(got["approval"]["risk_level"])),
    })  # fmt: skip


def _edit_context(approval: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """What the "Edit, then approve" form starts from: the version being decided (the request,
    or the edit proposed under a quorum), and its payload as inputs when a schema allows."""
    proposed = bool(approval.get("approved_digest")) and approval.get("status") == "pending"
    action = approval["approved_action"] if proposed else requested.get("action", {})
    payload = approval.get("approved_payload") if proposed else requested.get("proposed_payload")
    schema = requested.get("payload_schema")
    return {
        "current_digest": approval["approved_digest"] if proposed else approval["digest"],
        "current_action": action or {},
        "requested_rows": (requested.get("action") or {}).get("scope", {}).get("row_ids") or [],
        "edit_payload": payload,
        "form_fields": edit_form.fields(schema, payload),
        "schema_json": json.dumps(schema) if schema else "",
    }


def _when(value: str | None) -> str:
    """``2026-11-30T17:17:24.122010Z`` -> ``2026-11-30 17:17:24 UTC``."""
    return f"{value[:19].replace('T', ' ')} UTC" if value else "—"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _back(workspace: str, approval_id: UUID, **query: str) -> Redirect:
    suffix = f"?{urlencode(query)}" if query else ""
    return Redirect(f"/workspaces/{workspace}/approvals/{approval_id}{suffix}", status_code=303)


async def _decide(
    request: AnyRequest,
    workspace: str,
    approval_id: UUID,
    verb: str,
    body: dict[str, Any],
    channel: str = "web",
) -> Redirect:
    method = _identity(request).method(request)
    auth = "email_link" if channel == "email" else "session"  # the link, over a signed-in page
    body = {**body, "via": {"channel": channel, "auth": auth, "ref": method}}
    data = await _bus(request).command(workspace, verb, body)  # type: ignore[arg-type]
    if error := reply_error(data):
        return _back(workspace, approval_id, error=f"{error.code}: {error.message}"[:300])
    reply = _json(data)
    version = reply["approval"]["version"]
    return _back(workspace, approval_id, done=reply["outcome"], min_version=str(version))


@post("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/approve", status_code=303)
async def approve(
    request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath, data: EditForm
) -> Redirect:
    person, _ = await member_in(request, workspace)
    body = {"approval_id": approval_id, "approver": person, "digest": data.get("digest", ""),
            "reason": data.get("reason") or None}  # fmt: skip
    if (grant := grant_terms(data)) is not None:
        body["grant"] = grant
    if signed := _passkey(data):
        body["passkey"] = signed
    if data.get("edited"):  # "Edit, then approve": the form read back as edits
        data_got = await _bus(request).query(workspace, "get", {"approval_id": approval_id})
        if reply_error(data_got):
            raise GatewayError("not_found", "no such approval in this workspace")
        got = _json(data_got)
        rows = data.get("row_id", [])
        rows = [rows] if isinstance(rows, str) else list(rows)  # one checked row, or several
        try:
            body["edits"] = edit_form.edits(data, rows, got["approval"])
        except edit_form.FormError as error:
            return _back(workspace, approval_id, error=f"invalid: {error}"[:300])
    return await _decide(request, workspace, approval_id, "approve", body)


@post("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/reject", status_code=303)
async def reject(
    request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath, data: Form
) -> Redirect:
    person, _ = await member_in(request, workspace)
    body = {"approval_id": approval_id, "approver": person, "reason": data.get("reason") or None,
            "rerun": data.get("rerun") == "on"}  # fmt: skip
    if signed := _passkey(data):
        body["passkey"] = signed
    return await _decide(request, workspace, approval_id, "reject", body)


def _passkey(data: dict[str, Any]) -> Any:
    """The passkey assertion the page's script put in the form (JSON), or None; the command
    service validates its shape and checks it."""
    raw = data.get("passkey")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise GatewayError("invalid", "the passkey field is not JSON") from None


@post("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/respond", status_code=303)
async def respond(
    request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath, data: Form
) -> Redirect:
    """An answer instead of a decision (an empty one is refused by the command as invalid)."""
    person, _ = await member_in(request, workspace)
    body = {"approval_id": approval_id, "approver": person, "message": data.get("message", "")}
    return await _decide(request, workspace, approval_id, "respond", body)


# -- confirming a decision from an email link --------------------------------------------------


def _tokens(request: AnyRequest) -> ConfirmTokens:
    tokens: ConfirmTokens | None = request.app.state.confirm_tokens
    if tokens is None:
        raise GatewayError("not_found", "email links are off: the gateway has no secret")
    return tokens


@get("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/confirm", name="confirm")
async def confirm(
    request: AnyRequest,
    workspace: WorkspacePath,
    approval_id: ApprovalPath,
    token: FromQuery[str],
) -> Template:
    """What an email link opens: the decision to confirm, signed in, with a POST. Opening it
    (as a mail scanner does) decides nothing and uses nothing up."""
    person, _ = await member_in(request, workspace)
    try:
        fields = _tokens(request).check(token, str(approval_id))
        error = None
    except LinkInvalid as invalid:
        fields, error = {}, str(invalid)
    data = await _bus(request).query(workspace, "get", {"approval_id": approval_id})
    if reply_error(data):
        raise GatewayError("not_found", "no such approval in this workspace")
    got = _json(data)
    return Template("confirm.html", context={
        "person": person, "workspace": workspace, "approval": got["approval"], "token": token,
        "decision": fields.get("d"), "error": error,
    })  # fmt: skip


@post("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/confirm", status_code=303)
async def confirmed(
    request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath, data: Form
) -> Redirect:
    person, _ = await member_in(request, workspace)
    tokens = _tokens(request)
    try:
        fields = tokens.check(data.get("token", ""), str(approval_id))
        await tokens.consume(_bus(request).nc.jetstream(), fields)
    except LinkInvalid as invalid:
        return _back(workspace, approval_id, error=str(invalid))
    body: dict[str, Any] = {"approval_id": approval_id, "approver": person,
                            "reason": data.get("reason") or None}  # fmt: skip
    if fields["d"] == "approve":
        body["digest"] = data.get("digest", "")
        return await _decide(request, workspace, approval_id, "approve", body, "email")
    return await _decide(request, workspace, approval_id, "reject", body, "email")


# -- the review queue ----------------------------------------------------------------------


@post("/workspaces/{workspace:str}/reviews/next", status_code=303)
async def next_review(request: AnyRequest, workspace: WorkspacePath, data: Form) -> Redirect:
    _, member = await member_in(request, workspace)
    found = await reviews.next_review(_bus(request).nc, workspace, member,
                                      skill=data.get("skill") or None)  # fmt: skip
    if found is None:
        return Redirect(f"/workspaces/{workspace}/approvals?done=no_reviews", status_code=303)
    return _back(workspace, found["id"], review="1")


# -- live updates --------------------------------------------------------------------------


@get("/workspaces/{workspace:str}/live", name="live")
async def live(request: AnyRequest, workspace: WorkspacePath) -> ServerSentEvent:
    """The workspace's events as they are published: ``{"approval_id", "version", "type"}``."""
    await member_in(request, workspace)
    nc = _bus(request).nc

    async def stream() -> AsyncGenerator[ServerSentEventMessage]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)

        async def put(msg: Any) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(msg)

        subscription = await nc.subscribe(subjects.events_of(workspace), cb=put)
        try:
            yield ServerSentEventMessage(comment="listening")
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ServerSentEventMessage(comment="keepalive")
                    continue
                try:
                    event = event_decoder.decode(msg.data)
                except (msgspec.DecodeError, UnknownSchemaVersion):
                    continue  # not an event this gateway can read: the page refetches anyway
                if not isinstance(event, Event):
                    continue  # a workspace's own events (settings, budget) change no page
                yield ServerSentEventMessage(data=json.dumps({
                    "approval_id": str(event.originator_id), "version": event.version,
                    "type": event.event_type,
                }))  # fmt: skip
        finally:
            await subscription.unsubscribe()

    return ServerSentEvent(stream())


HANDLERS = [
    home, sign_in, dev_sign_in, sign_in_link, use_sign_in_link, sign_out, inbox, detail, approve,
    reject, next_review, live, confirm, confirmed, respond,
]  # fmt: skip
