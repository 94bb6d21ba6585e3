"""Signing and verifying approval receipts (Ed25519, through ``cryptography``).

The command service signs a receipt into every ``approved`` event with its key; anyone holding
the public key verifies it offline. The key lives in a PEM file (PKCS#8, unencrypted, mode
0600): configured for a real deployment, created on first start by ``approvals dev``, and held
only in memory when nothing is configured (tests).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from typing import TYPE_CHECKING

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from approvals.schemas.codec import encoder
from approvals.schemas.receipts import PublicKey, Receipt, ReceiptBody

if TYPE_CHECKING:
    from pathlib import Path

    from approvals.schemas import events
    from approvals.services.approvals.domain import Approval

log = logging.getLogger(__name__)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


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
            receipt_version=2,
            requested_digest=approved.requested_digest or request.digest,
        )
        return Receipt(**msgspec.structs.asdict(body), algorithm="Ed25519",
                       signature=self.signature(body))  # fmt: skip

    def signature(self, body: msgspec.Struct) -> str:
        """base64url of the Ed25519 signature over ``body``'s compact JSON."""
        return b64(self._private.sign(encoder.encode(body)))


class ReceiptInvalid(ValueError):
    """The receipt is not signed by the key it names, or was changed after signing."""


def verify(receipt: Receipt, keys: dict[str, PublicKey] | list[PublicKey]) -> ReceiptBody:
    """The signed body if ``receipt`` carries a valid signature by one of ``keys``; otherwise
    raise ReceiptInvalid saying why."""
    body = receipt.body()
    check_signature(body, receipt.key_id, receipt.signature, keys, "receipt")
    return body


def check_signature(
    body: msgspec.Struct,
    key_id: str,
    signature: str,
    keys: dict[str, PublicKey] | list[PublicKey],
    what: str,
) -> None:
    """Raise ReceiptInvalid unless ``signature`` is one by ``key_id`` (among ``keys``) over
    ``body``'s compact JSON: the one check behind receipts and audit checkpoints."""
    by_id = keys if isinstance(keys, dict) else {k.key_id: k for k in keys}
    key = by_id.get(key_id)
    if key is None:
        raise ReceiptInvalid(f"{what} is signed with key {key_id}, which is not known")
    try:
        public = Ed25519PublicKey.from_public_bytes(unb64(key.public_key))
        raw_signature = unb64(signature)
    except ValueError as error:
        raise ReceiptInvalid(f"the key or signature is malformed: {error}") from None
    if key_id_of(public) != key_id:
        raise ReceiptInvalid("the public key given does not match the key id it is listed under")
    try:
        public.verify(raw_signature, encoder.encode(body))
    except InvalidSignature:
        raise ReceiptInvalid(
            f"the signature does not match: the {what} was changed after it was signed, "
            "or another key signed it"
        ) from None


receipt_decoder = msgspec.json.Decoder(Receipt)
