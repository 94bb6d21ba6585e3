"""Signing approval receipts (Ed25519, through ``cryptography``).

The command service signs a receipt into every ``approved`` event with its key; anyone holding
the public key verifies it offline (``approvals.schemas.signatures``, in the client). The key
lives in a PEM file (PKCS#8, unencrypted, mode 0600): configured for a real deployment, created
on first start by ``approvals dev``, and held only in memory when nothing is configured (tests).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from approvals.schemas.codec import encoder
from approvals.schemas.receipts import PublicKey, Receipt, ReceiptBody
from approvals.schemas.signatures import b64, key_id_of

if TYPE_CHECKING:
    from pathlib import Path

    from approvals.schemas import events
    from approvals.services.approvals.domain import Approval

log = logging.getLogger(__name__)


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> Signer:
        """Load the PEM key at ``path``; with ``create``, write a new one there if it is missing."""
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            log.warning("generated a new receipt signing key at %s", path)
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(private_key)

    def public_key(self) -> PublicKey:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(key_id=self.key_id, public_key=b64(raw))

    def sign(self, approval: Approval, approved: events.Approved) -> Receipt:
        request = approval.request
        body = ReceiptBody(
            key_id=self.key_id,
            workspace_id=approval.workspace_id,
            approval_id=approval.id,
            digest=approved.digest,
            max_credits=(approved.action or request.action).max_credits,
            approvers=approved.votes or (approved.actor,),
            approved_at=approved.occurred_at,
            redeem_by=approved.redeem_by or request.expires_at,
            expires_at=request.expires_at,
            receipt_version=3 if approved.passkeys else 2,
            requested_digest=approved.requested_digest or request.digest,
            passkeys=approved.passkeys,
        )
        return Receipt(**msgspec.structs.asdict(body), algorithm="Ed25519",
                       signature=self.signature(body))  # fmt: skip

    def signature(self, body: msgspec.Struct) -> str:
        """base64url of the Ed25519 signature over ``body``'s compact JSON."""
        return b64(self._private.sign(encoder.encode(body)))
