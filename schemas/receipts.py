"""Signed approval receipts: who approved exactly what, verifiable offline with a public key.

The signature (Ed25519) covers the compact JSON of ``ReceiptBody``: its fields in the order
declared here, as msgspec writes them. A verifier decodes the receipt, encodes its body the same
way and checks the signature with the public key named by ``key_id``.

Version 3 adds ``passkeys``: each approver's WebAuthn assertion over the challenge of exactly
this decision (see ``schemas/passkeys.py``), where the workspace requires passkeys; a receipt
without any stays version 2.

Version 2 adds ``requested_digest`` (what was asked; ``digest`` is what was approved, and they
differ after an approver's edit). A version 1 body is signed without that key, so the body's
JSON leaves out a field at its default (``omit_defaults``): ``receipt_version`` has no default
(nor ``Receipt``'s ``algorithm``) for that reason, and a version 1 receipt encodes exactly as it
was signed and as it was stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from approvals.schemas.passkeys import SignedDecision


class ReceiptBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    receipt_version: Literal[1, 2, 3]
    key_id: str  # which key signed it (see approvals.query.keys)
    workspace_id: str
    approval_id: UUID
    digest: str  # the approved action and payload (see schemas/digest.py)
    max_credits: float | None  # the credit ceiling approved
    approvers: tuple[str, ...]  # the members whose votes approved it, or policy:<rule>
    approved_at: datetime
    redeem_by: datetime  # the action must start before this
    expires_at: datetime  # the request's own deadline
    requested_digest: str | None = None  # version 2: the digest requested (edits change it)
    # Version 3: each approver's passkey assertion over this decision (where the workspace
    # requires passkeys): checkable without trusting this service's key.
    passkeys: tuple[SignedDecision, ...] = ()


class Receipt(ReceiptBody, frozen=True, kw_only=True):
    algorithm: Literal["Ed25519"]  # required, so that omit_defaults always writes it
    signature: str  # base64url of the 64-byte signature over the body's JSON

    def body(self) -> ReceiptBody:
        fields = msgspec.structs.asdict(self)
        del fields["algorithm"], fields["signature"]
        return ReceiptBody(**fields)


class PublicKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str  # base64url of the 32 raw bytes


class KeysReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: Literal[True] = True
    keys: tuple[PublicKey, ...]
