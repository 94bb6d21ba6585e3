"""Checking passkey-signed decisions without trusting the service: a receipt's assertions against
an export of registered credentials (``approvals verify``), and every signed decision of the log
in order (``approvals audit verify``).

Each assertion must be by a credential registered to the member named, in the receipt's
workspace, before the decision (and not removed before it), over the challenge of exactly this
decision: this approval, its digest, this member, the decision and the version it names. What
does not hold is named (``Problem.reason``): ``unknown_credential``, ``registered_after``,
``credential_removed``, ``not_an_approver``, ``unsigned_approver``, or the assertion checker's
own reasons (``other_approval``, ``other_digest``, ``other_member``, ``signature_invalid``...).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import msgspec

from approvals.schemas.passkeys import RegisteredPasskey, SignedDecision, Statement
from approvals.services.approvals import assertions

if TYPE_CHECKING:
    from collections.abc import Iterable

    from approvals.schemas.receipts import ReceiptBody


class Checked(NamedTuple):
    member: str
    credential_id: str
    reason: str | None = None  # None: it holds
    message: str = ""


def _credential(key: RegisteredPasskey) -> assertions.Credential:
    return assertions.Credential(key.member, key.credential_id, key.public_key, key.rp_id,
                                 key.origin)  # fmt: skip


def check_signed(
    signed: SignedDecision,
    expected: Statement,
    key: RegisteredPasskey | None,
    decided_at: datetime,
    sign_count: int | None = None,
) -> Checked:
    """One assertion against the credential it names (None: no such credential is known)."""
    credential_id = signed.assertion.credential_id
    if key is None or key.workspace_id != expected.workspace_id:
        return Checked(signed.member, credential_id, "unknown_credential",
                       "no credential with this id is registered in the workspace")  # fmt: skip
    if key.registered_at > decided_at:
        return Checked(signed.member, credential_id, "registered_after",
                       "the credential was registered after the decision")  # fmt: skip
    if key.removed_at is not None and key.removed_at <= decided_at:
        return Checked(signed.member, credential_id, "credential_removed",
                       "the credential was removed before the decision")  # fmt: skip
    try:
        assertions.check(_credential(key), expected, signed, sign_count)
    except assertions.Refused as refused:
        return Checked(signed.member, credential_id, refused.reason, refused.message)
    return Checked(signed.member, credential_id)


def check_receipt(body: ReceiptBody, keys: Iterable[RegisteredPasskey]) -> list[Checked]:
    """Every approver's assertion in a receipt (an approver without one fails, where any has
    one); empty for a receipt that carries none."""
    if not body.passkeys:
        return []
    known = {key.credential_id: key for key in keys}
    found = []
    for signed in body.passkeys:
        if signed.member not in body.approvers:
            found.append(Checked(signed.member, signed.assertion.credential_id,
                                 "not_an_approver", "the receipt does not name this member "
                                 "among its approvers"))  # fmt: skip
            continue
        expected = Statement(workspace_id=body.workspace_id, approval_id=body.approval_id,
                             version=signed.version, decision="approve", digest=body.digest,
                             approver=signed.member)  # fmt: skip
        found.append(check_signed(signed, expected, known.get(signed.assertion.credential_id),
                                  body.approved_at))  # fmt: skip
    signers = {signed.member for signed in body.passkeys}
    found += [
        Checked(
            member, "", "unsigned_approver", "this approver's decision carries no passkey assertion"
        )
        for member in body.approvers
        if member not in signers
    ]
    return found


class LogAudit:
    """Follows the log: registrations, removals and every signed vote or decision, each checked
    against the credential as it stood then, its counter moving forward."""

    TYPES = frozenset({"passkey_registered", "passkey_removed", "requested", "vote_cast",
                       "approved", "rejected"})  # fmt: skip

    def __init__(self) -> None:
        self.keys: dict[str, RegisteredPasskey] = {}
        self.counters: dict[str, int] = {}
        self.digests: dict[str, str] = {}  # approval -> the digest of the version decided on
        self.settled: dict[str, int] = {}  # approval -> the version of its last vote or request
        self.checked = 0

    def feed(self, raw: dict[str, Any]) -> Checked | None:
        """One event (its stored JSON); the failed check it carries, if any."""
        kind = raw.get("type")
        if kind == "passkey_registered":
            key = msgspec.convert({**raw, "registered_at": raw["occurred_at"]},
                                  RegisteredPasskey, strict=False)  # fmt: skip
            self.keys[key.credential_id] = key
            self.counters[key.credential_id] = int(raw.get("sign_count", 0))
            return None
        if kind == "passkey_removed":
            known = self.keys.get(raw["credential_id"])
            if known is not None:
                removed = datetime.fromisoformat(raw["occurred_at"])
                self.keys[known.credential_id] = msgspec.structs.replace(known, removed_at=removed)
            return None
        approval = str(raw.get("approval_id"))
        if kind == "requested" or (kind == "vote_cast" and raw.get("action") is not None):
            self.digests[approval] = raw["digest"]
        settled = self.settled.get(approval, 1)
        if kind in ("requested", "vote_cast"):
            self.settled[approval] = int(raw["version"])
        if not raw.get("passkey"):
            return None
        return self._check(raw, approval, settled)

    def _check(self, raw: dict[str, Any], approval: str, settled: int) -> Checked | None:
        """The event's own assertion: over its approval, the digest decided on, and a version
        from the last vote (or the request) up to the one before this event."""
        signed = msgspec.convert(raw["passkey"], SignedDecision)
        digest = raw.get("digest") or self.digests.get(approval, "")
        before = int(raw["version"]) - 1
        version = signed.version if settled <= signed.version <= before else before
        expected = Statement(workspace_id=raw["workspace_id"], approval_id=UUID(raw["approval_id"]),
                             version=version, decision=signed.decision, digest=digest,
                             approver=signed.member)  # fmt: skip
        key = self.keys.get(signed.assertion.credential_id)
        decided_at = datetime.fromisoformat(raw["occurred_at"])
        counter = self.counters.get(signed.assertion.credential_id, 0)
        self.checked += 1
        result = check_signed(signed, expected, key, decided_at, counter)
        if result.reason is None:
            self.counters[signed.assertion.credential_id] = assertions.counter_of(signed.assertion)
            return None
        return result
