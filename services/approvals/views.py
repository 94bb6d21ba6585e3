"""How an approval appears in replies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from approvals.schemas.passkeys import RegisteredPasskey
from approvals.schemas.replies import ApprovalState, DelegationState, GrantState, WorkspaceState
from approvals.services.approvals import grants

if TYPE_CHECKING:
    from datetime import datetime

    from approvals.services.approvals.domain import Approval
    from approvals.services.approvals.governance import Workspace
    from approvals.services.approvals.grants import Grant
    from approvals.services.approvals.passkeys import Passkey


def web_url(base: str, workspace_id: str, approval_id: str) -> str:
    return f"{base.rstrip('/')}/workspaces/{workspace_id}/approvals/{approval_id}"


def approval_state(approval: Approval, web_url_base: str) -> ApprovalState:
    request = approval.request
    return ApprovalState(
        id=approval.id,
        workspace_id=approval.workspace_id,
        status=approval.status,
        version=approval.version,
        digest=request.digest,
        created_at=request.occurred_at,
        expires_at=request.expires_at,
        resolved_at=approval.resolved_at,
        web_url=web_url(web_url_base, approval.workspace_id, str(approval.id)),
        title=request.title,
        summary=request.summary,
        risk_level=request.risk_level,
        requested_by=request.requested_by,
        on_behalf_of=request.on_behalf_of,
        skill_name=request.skill_name,
        skill_execution_id=request.skill_execution_id,
        action=request.action,
        proposed_payload=request.proposed_payload,
        trace_id=request.trace_id,
        deliveries=approval.deliveries,
        decided_by=approval.decided_by,
        reason=approval.reason,
        quorum=request.quorum,
        votes=approval.votes,
        redeem_by=approval.redeem_by,
        receipt=approval.receipt,
        rerun=approval.rerun,
        payload_schema=request.payload_schema,
        **_version(approval),
    )


def _version(approval: Approval) -> dict[str, Any]:
    """The approved version (or the one being voted on after an edit), where there is one."""
    if approval.status != "approved" and approval.proposal is None:
        return {}
    current = approval.current
    return {
        "approved_digest": current.digest,
        "approved_action": current.action,
        "approved_payload": current.proposed_payload,
        "changes": current.changes,
    }


def workspace_state(ws: Workspace, now: datetime) -> WorkspaceState:
    """The settings in force and the delegations still running (the latest grant per pair)."""
    latest = {(d.delegator, d.delegate): d for d in ws.delegations}
    return WorkspaceState(
        workspace_id=ws.workspace_id,
        version=ws.version,
        settings=ws.settings,
        configured_by=ws.configured_by,
        configured_at=ws.configured_at,
        delegations=tuple(
            DelegationState(delegator=d.delegator, delegate=d.delegate, ends_at=d.ends_at)
            for d in latest.values()
            if d.ends_at > now
        ),
    )


def grant_state(grant: Grant, ws: Workspace, now: datetime) -> GrantState:
    given = grant.given
    return GrantState(
        grant_id=given.grant_id, status=grants.status(grant, ws, now), granted_by=given.actor,
        granted_at=given.occurred_at, ends_at=grants.ends_at(grant, ws),
        requested_by=given.requested_by, kind=given.kind, provider=given.provider,
        destination=given.destination, risk_level=given.risk_level,
        max_credits=given.max_credits, runs=given.runs,
        runs_today=grant.runs_today if grant.day == now.date().isoformat() else 0,
        runs_total=grant.runs_total, revoked_by=grant.revoked_by, revoked_at=grant.revoked_at,
    )  # fmt: skip


def passkey_state(key: Passkey) -> RegisteredPasskey:
    return RegisteredPasskey(
        workspace_id=key.workspace_id, member=key.member, credential_id=key.credential_id,
        public_key=key.public_key, algorithm=key.algorithm, rp_id=key.rp_id, origin=key.origin,
        registered_at=key.registered_at, removed_at=key.removed_at, name=key.name,
    )  # fmt: skip
