"""Verifying signed facts offline (Ed25519, through ``cryptography``): approval receipts and
audit checkpoints. Part of the wire contract, so a caller holding the service's public keys
checks a receipt with the client alone; signing stays with the command service
(``services/approvals/receipts.py``)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from approvals.schemas.codec import encoder
from approvals.schemas.receipts import PublicKey, Receipt, ReceiptBody


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class ReceiptInvalid(ValueError):
    """The receipt is not signed by the key it names, or was changed after signing."""


def verify(receipt: Receipt, keys: dict[str, PublicKey] | list[PublicKey]) -> ReceiptBody:
    """The signed body if ``receipt`` carries a valid signature by one of ``keys``; otherwise
    raise ReceiptInvalid saying why."""
    body = receipt.body()
    check_signature(body, receipt.key_id, receipt.signature, keys, "receipt")
    return body


def verify_receipt(
    receipt: Receipt | dict[str, Any] | bytes, keys: list[PublicKey] | dict[str, PublicKey]
) -> ReceiptBody:
    """Offline: the signed facts of a receipt (a Struct, its JSON, or the JSON decoded), or
    ReceiptInvalid saying what is wrong."""
    if isinstance(receipt, bytes):
        receipt = msgspec.json.decode(receipt, type=Receipt)
    elif isinstance(receipt, dict):
        receipt = msgspec.convert(receipt, Receipt, strict=False)
    return verify(receipt, keys)


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
