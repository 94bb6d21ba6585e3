"""Passkeys: members register WebAuthn credentials; decisions the workspace requires a passkey for
carry the deciding member's assertion over the decision's own challenge.

Pure, like the domain (the signature checks are computation, through ``assertions``). Each
credential is its own aggregate (uuid5 of workspace and credential id): its registration and its
removal; its uses are another (``counter_key``), one ``passkey_used`` event saved with each
decision it signs, each carrying the whole count.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import events
from approvals.schemas.passkeys import SignedDecision, Statement, signed_statement, unb64
from approvals.services.approvals import assertions
from approvals.services.approvals.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PasskeyInvalid,
    PasskeyRequired,
)
from approvals.services.approvals.governance import Workspace, require_role

if TYPE_CHECKING:
    from approvals.schemas import commands
    from approvals.schemas.passkeys import Assertion, Decision
    from approvals.services.approvals.domain import Approval

PASSKEY_NAMESPACE = UUID("4f3c2b1a-8e7d-4c6b-9a5f-0e1d2c3b4a59")


def passkey_key(workspace_id: str, credential_id: str) -> UUID:
    return uuid5(PASSKEY_NAMESPACE, f"passkey\x00{workspace_id}\x00{credential_id}")


def counter_key(workspace_id: str, credential_id: str) -> UUID:
    """The id of a credential's uses: an aggregate of its own whose every event carries the
    whole count, so a decision reads only its last event however often the passkey was used."""
    return uuid5(PASSKEY_NAMESPACE, f"passkey-uses\x00{workspace_id}\x00{credential_id}")


class Counter(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    sign_count: int


class Passkey(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    workspace_id: str
    member: str
    credential_id: str
    public_key: str
    algorithm: int
    rp_id: str
    origin: str
    sign_count: int
    registered_at: datetime
    removed_at: datetime | None = None
    name: str = ""
    uses: int = 0  # the version of its counter (see counter_key): how many decisions it signed

    def credential(self) -> assertions.Credential:
        return assertions.Credential(self.member, self.credential_id, self.public_key,
                                     self.rp_id, self.origin)  # fmt: skip


def register(
    ws: Workspace, cmd: commands.RegisterPasskey, now: datetime
) -> events.PasskeyRegistered:
    """The registration, once the ``webauthn`` library verified it (the caller refuses a
    credential id registered already: it is known only from the verified response)."""
    member = ws.member_of(cmd.member)
    if member is None:
        raise Forbidden(f"{cmd.member} is not a member of the workspace",
                        rule="passkey_member", member=cmd.member)  # fmt: skip
    try:
        challenge = unb64(cmd.challenge)
        registered = assertions.check_registration(cmd.credential, challenge, cmd.rp_id,
                                                   cmd.origin)  # fmt: skip
    except (assertions.Refused, ValueError) as error:
        reason = error.reason if isinstance(error, assertions.Refused) else "malformed"
        raise PasskeyInvalid(str(error), reason=reason) from None
    return events.PasskeyRegistered(
        event_id=uuid4(), aggregate_id=passkey_key(ws.workspace_id, registered.credential_id),
        version=1, workspace_id=ws.workspace_id, occurred_at=now, actor=member, member=member,
        credential_id=registered.credential_id, public_key=registered.public_key,
        algorithm=registered.algorithm, sign_count=registered.sign_count, rp_id=cmd.rp_id,
        origin=cmd.origin, session=cmd.session, name=cmd.name,
    )  # fmt: skip


def remove(
    ws: Workspace, existing: Passkey | None, cmd: commands.RemovePasskey, now: datetime
) -> events.PasskeyRemoved:
    if existing is None:
        raise NotFound("no such passkey", credential_id=cmd.credential_id, kind="passkey")
    if ws.member_of(cmd.by) != existing.member:
        require_role(ws, cmd.by, "admin", "remove another member's passkey")
    if existing.removed_at is not None:
        raise Conflict("the passkey was removed already", credential_id=cmd.credential_id)
    return events.PasskeyRemoved(
        event_id=uuid4(), aggregate_id=existing.id, version=existing.version + 1,
        workspace_id=ws.workspace_id, occurred_at=now, actor=cmd.by, member=existing.member,
        credential_id=existing.credential_id, reason=cmd.reason,
    )  # fmt: skip


def require(
    ws: Workspace,
    approval: Approval,
    decision: Decision,
    digest: str,
    member: str,
    assertion: Assertion | None,
    credential: Passkey | None,
) -> SignedDecision | None:
    """The decision's signature where the workspace requires one for the request's risk level
    (None where it does not); PasskeyRequired without an assertion, PasskeyInvalid when it does
    not sign exactly this decision by ``member`` with a registered credential of theirs."""
    risk = approval.request.risk_level
    if not ws.settings.passkey_required(risk):
        return None
    if assertion is None:
        raise PasskeyRequired(
            f"the workspace requires a passkey to {decision} {risk}-risk requests: decide in "
            "the web inbox, which signs the decision with your passkey",
            workspace_id=approval.workspace_id, approval_id=str(approval.id), risk_level=risk,
            decision=decision,
        )  # fmt: skip
    if credential is None or credential.workspace_id != ws.workspace_id:
        raise PasskeyInvalid("the passkey is not registered in this workspace",
                             reason="unknown_credential")  # fmt: skip
    if credential.removed_at is not None:
        raise PasskeyInvalid("the passkey was removed: it signs nothing any more",
                             reason="credential_removed")  # fmt: skip
    version = signed_version(approval, assertion)
    signed = SignedDecision(member=member, version=version, decision=decision,
                            assertion=assertion)  # fmt: skip
    expected = Statement(workspace_id=approval.workspace_id, approval_id=approval.id,
                         version=version, decision=decision, digest=digest,
                         approver=member)  # fmt: skip
    try:
        counter = assertions.check(credential.credential(), expected, signed,
                                   credential.sign_count)  # fmt: skip
    except assertions.Refused as refused:
        raise PasskeyInvalid(refused.message, reason=refused.reason) from None
    return msgspec.structs.replace(signed, sign_count=counter)


def signed_version(approval: Approval, assertion: Assertion) -> int:
    """The approval version a signature may name: the one its challenge names, where nothing
    that changes the decision (a vote, an edit) was recorded since it (a delivery or a reminder
    changes nothing the person decides on); otherwise the current one, which it then fails."""
    named = signed_statement(SignedDecision(member="", version=0, decision="approve",
                                            assertion=assertion))  # fmt: skip
    if named is not None and approval.settled_version <= named.version <= approval.version:
        return named.version
    return approval.version


def with_counter(credential: Passkey, counter: Counter | None) -> Passkey:
    """The credential with its counter as its uses left it."""
    if counter is None:
        return credential
    return msgspec.structs.replace(credential, sign_count=counter.sign_count, uses=counter.version)


def used(credential: Passkey, signed: SignedDecision, approval_id: UUID,
         now: datetime) -> events.PasskeyUsed:  # fmt: skip
    return events.PasskeyUsed(
        event_id=uuid4(), aggregate_id=counter_key(credential.workspace_id,
                                                   credential.credential_id),
        version=credential.uses + 1,
        workspace_id=credential.workspace_id, occurred_at=now, actor=signed.member,
        member=signed.member, credential_id=credential.credential_id, approval_id=approval_id,
        sign_count=signed.sign_count,
    )  # fmt: skip


def evolve_counter(counter: Counter | None, event: events.PasskeyUsed) -> Counter:
    return Counter(id=event.aggregate_id, version=event.version, sign_count=event.sign_count)


def evolve(key: Passkey | None, event: events.PasskeyRegistered | events.PasskeyRemoved) -> Passkey:
    if isinstance(event, events.PasskeyRegistered):
        return Passkey(
            id=event.aggregate_id, version=event.version, workspace_id=event.workspace_id,
            member=event.member, credential_id=event.credential_id, public_key=event.public_key,
            algorithm=event.algorithm, rp_id=event.rp_id, origin=event.origin,
            sign_count=event.sign_count, registered_at=event.occurred_at, name=event.name,
        )  # fmt: skip
    if key is None:
        raise TypeError(f"{event.event_type} before passkey_registered for {event.credential_id}")
    return msgspec.structs.replace(key, version=event.version, removed_at=event.occurred_at)
