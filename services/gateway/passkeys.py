"""The web inbox's passkeys: a member registers and removes their own passkeys (WebAuthn), and
the detail page asks for the options of a decision's ceremony.

The browser does the ceremonies (``navigator.credentials.create`` / ``get``, a few lines of
script in the templates); this module only hands it options and forwards what it returns to the
command service, which checks everything with the ``webauthn`` library. The relying party is the
web inbox's public address (``APPROVALS_WEB_URL``): its host is the RP ID, its scheme, host and
port the origin. A registration's challenge is random and held in the signed session cookie
until the registration comes back; a decision's challenge is the decision itself
(``approvals.schemas.passkeys.challenge``), so it needs no state at all.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from approvals.schemas import commands, events
from approvals.schemas.codec import reply_error
from approvals.schemas.passkeys import PasskeysExport, Statement, b64, challenge
from approvals.services.approvals.edits import edited_version
from approvals.services.approvals.errors import ApprovalError
from approvals.services.gateway import edit_form
from approvals.services.gateway.bus import GatewayError
from approvals.services.gateway.web import (
    AnyRequest,
    ApprovalPath,
    EditForm,
    Form,
    WorkspacePath,
    _bus,
    _identity,
    _json,
    _when,
    member_in,
)

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

CHALLENGE_KEY = "passkey_challenge"
TIMEOUT_MS = 120_000
ALGORITHMS = (-7, -8, -257)  # ES256, EdDSA, RS256: what the webauthn library verifies
_export = msgspec.json.Decoder(PasskeysExport)


LOOPBACK = ("127.0.0.1", "::1")


def relying_party(request: AnyRequest) -> tuple[str, str]:
    """The RP ID and origin: the web inbox's public address. A loopback address (``approvals
    dev``'s default) becomes ``localhost``: browsers refuse an IP address as the RP ID, and treat
    http://localhost as a secure context."""
    settings: Settings = request.app.state.settings
    parts = urlsplit(settings.web_url)
    host = parts.hostname or "localhost"
    if host in LOOPBACK:
        host = "localhost"
        port = f":{parts.port}" if parts.port else ""
        return host, f"{parts.scheme}://{host}{port}"
    return host, f"{parts.scheme}://{parts.netloc}"


async def registered(request: AnyRequest, workspace: str, member: str) -> list[dict[str, Any]]:
    """``member``'s passkeys in ``workspace`` (removed ones too, with ``removed_at``)."""
    data = await _bus(request).query(workspace, "passkeys", {"member": member})
    if refused := reply_error(data):
        raise GatewayError(refused.code, refused.message)
    return [msgspec.to_builtins(key) for key in _export.decode(data).passkeys]


@get("/workspaces/{workspace:str}/passkeys", name="passkeys")
async def passkeys_page(
    request: AnyRequest,
    workspace: WorkspacePath,
    error: FromQuery[str | None] = None,
    done: FromQuery[str | None] = None,
) -> Template:
    person, member = await member_in(request, workspace)
    keys = await registered(request, workspace, member)
    return Template("passkeys.html", context={
        "person": person, "member": member, "workspace": workspace, "when": _when,
        "keys": [k for k in keys if not k.get("removed_at")], "error": error, "done": done,
    })  # fmt: skip


@post("/workspaces/{workspace:str}/passkeys/options", status_code=200)
async def registration_options(request: AnyRequest, workspace: WorkspacePath) -> dict[str, Any]:
    """``navigator.credentials.create()``'s options (binary fields base64url); the challenge is
    kept in the session until the registration comes back."""
    _, member = await member_in(request, workspace)
    rp_id, _ = relying_party(request)
    nonce = secrets.token_bytes(32)
    request.set_session({**request.session, CHALLENGE_KEY: b64(nonce)})
    keys = await registered(request, workspace, member)
    return {
        "challenge": b64(nonce),
        "rp": {"id": rp_id, "name": "Approvals"},
        # The user handle: an opaque id of the member in this workspace (no personal data).
        "user": {"id": b64(hashlib.sha256(f"{workspace}\x00{member}".encode()).digest()),
                 "name": member,
                 "displayName": f"{member} ({workspace})"},
        "pubKeyCredParams": [{"type": "public-key", "alg": alg} for alg in ALGORITHMS],
        "authenticatorSelection": {"residentKey": "preferred", "userVerification": "required"},
        "excludeCredentials": [{"type": "public-key", "id": k["credential_id"]}
                               for k in keys if not k.get("removed_at")],
        "attestation": "none", "timeout": TIMEOUT_MS,
    }  # fmt: skip


@post("/workspaces/{workspace:str}/passkeys", status_code=200)
async def register(request: AnyRequest, workspace: WorkspacePath) -> dict[str, Any]:
    """What ``navigator.credentials.create()`` returned, sent on to the command service."""
    person, _ = await member_in(request, workspace)
    nonce = request.session.get(CHALLENGE_KEY)
    if not nonce:
        raise GatewayError("invalid", "no registration was started here: start it again")
    request.set_session({k: v for k, v in request.session.items() if k != CHALLENGE_KEY})
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("credential"), dict):
        raise GatewayError("invalid", "send the credential navigator.credentials.create() made")
    rp_id, origin = relying_party(request)
    method = _identity(request).method(request)
    command = {"member": person, "credential": body["credential"], "challenge": nonce,
               "rp_id": rp_id, "origin": origin, "session": method,
               "name": str(body.get("name") or "")[:200],
               "via": {"channel": "web", "auth": "session", "ref": method}}  # fmt: skip
    data = await _bus(request).command(workspace, "register_passkey", command)
    if refused := reply_error(data):
        raise GatewayError(refused.code, refused.message, **refused.details)
    return {"ok": True, "outcome": _json(data)["outcome"]}


@post("/workspaces/{workspace:str}/passkeys/remove", status_code=303)
async def remove(request: AnyRequest, workspace: WorkspacePath, data: Form) -> Redirect:
    person, _ = await member_in(request, workspace)
    via = {"channel": "web", "auth": "session", "ref": _identity(request).method(request)}
    body = {"credential_id": data.get("credential_id", ""), "by": person, "via": via}
    refused = reply_error(await _bus(request).command(workspace, "remove_passkey", body))
    query = {"error": f"{refused.code}: {refused.message}"[:300]} if refused else {
        "done": "removed"}  # fmt: skip
    return Redirect(f"/workspaces/{workspace}/passkeys?{urlencode(query)}", status_code=303)


async def _edited_digest(
    request: AnyRequest, workspace: str, approval_id: Any, data: dict[str, Any]
) -> str:
    """The digest of the version the "Edit, then approve" form makes (the command service's own
    rule, ``edited_version``, over the request as the history holds it)."""
    bus = _bus(request)
    got = await bus.query(workspace, "get", {"approval_id": approval_id})
    story = await bus.query(workspace, "history", {"approval_id": approval_id})
    if reply_error(got) or reply_error(story):
        raise GatewayError("not_found", "no such approval in this workspace")
    rows = data.get("row_id", [])
    rows = [rows] if isinstance(rows, str) else list(rows)
    try:
        edits = msgspec.convert(edit_form.edits(data, rows, _json(got)["approval"]),
                                commands.Edits)  # fmt: skip
        requested = msgspec.convert(_json(story)["timeline"][0]["event"], events.Requested)
        return edited_version(requested, edits).digest
    except (edit_form.FormError, msgspec.ValidationError, ApprovalError) as error:
        raise GatewayError("invalid", f"the edits: {error}") from None


@post("/workspaces/{workspace:str}/approvals/{approval_id:uuid}/passkey", status_code=200)
async def decision_options(
    request: AnyRequest, workspace: WorkspacePath, approval_id: ApprovalPath, data: EditForm
) -> dict[str, Any]:
    """``navigator.credentials.get()``'s options for deciding what the page shows: the
    challenge is the decision (this approval at the version and digest the page shows, after
    the edits of the edit form, the decision and the signed-in member), and only the member's
    own passkeys may answer it."""
    _, member = await member_in(request, workspace)
    decision = data.get("decision", "")
    if decision not in ("approve", "reject"):
        raise GatewayError("invalid", "decision must be approve or reject")
    digest = data.get("digest", "")
    if data.get("edited") and decision == "approve":
        digest = await _edited_digest(request, workspace, approval_id, data)
    try:
        statement = msgspec.convert({
            "workspace_id": workspace, "approval_id": str(approval_id),
            "version": int(data.get("version", "")), "decision": decision,
            "digest": digest, "approver": member,
        }, Statement)  # fmt: skip
    except (ValueError, msgspec.ValidationError):
        raise GatewayError("invalid", "the page's version and digest are missing: reload") from None
    keys = [k for k in await registered(request, workspace, member) if not k.get("removed_at")]
    if not keys:
        raise GatewayError(
            "passkey_required",
            f"{member} has no passkey in {workspace}: register one first",
            web_url=f"/workspaces/{workspace}/passkeys",
        )
    rp_id, _ = relying_party(request)
    return {
        "challenge": b64(challenge(statement)),
        "rpId": rp_id,
        "timeout": TIMEOUT_MS,
        "userVerification": "required",
        "allowCredentials": [{"type": "public-key", "id": k["credential_id"]} for k in keys],
    }


HANDLERS = [passkeys_page, registration_options, register, remove, decision_options]
