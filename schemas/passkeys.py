"""Passkey-signed decisions: what a person's authenticator signs, and how it is recorded.

A workspace may require a passkey for decisions at some risk levels (``[passkeys] require``).
The WebAuthn challenge of such a decision is the decision itself: the compact JSON of
``Statement`` (workspace, approval id, the approval's version when the ceremony started, the
decision, the digest decided on (after any edits) and the approver), prefixed by ``PREFIX``.
The browser puts the challenge in ``clientDataJSON``, which the authenticator signs (through its
SHA-256, with the authenticator data): so an assertion names exactly one decision, anyone can read
which one from the assertion alone, and an assertion moved to another approval, version,
digest, decision or member fails with that field named.

Pure and light (msgspec only): the client, the web page and the verifiers derive the same bytes.
The signature itself is checked with the ``webauthn`` library, server side
(``approvals.services.approvals.assertions``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from approvals.schemas.types import END

PREFIX = b"approvals-decision-v1:"
Decision = Literal["approve", "reject"]
B64 = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,8192}" + END)]
CredentialId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{16,1400}" + END)]
Challenge = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{16,512}" + END)]


class Statement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The decision a passkey signs (its fields in this order are the challenge's bytes)."""

    workspace_id: str
    approval_id: UUID
    version: int  # the approval's version when the ceremony started
    decision: Decision
    digest: str  # the version decided on: after an approver's edits, the edited one
    approver: str  # the member who decides (``user:<id>``)


class Assertion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``navigator.credentials.get()`` returned, each part base64url without padding."""

    credential_id: CredentialId
    authenticator_data: B64
    client_data_json: B64
    signature: B64
    user_handle: B64 | None = None


class SignedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A decision signed with a member's passkey, as the vote, decision and receipt carry it:
    who signed, the approval version the challenge named, and the assertion."""

    member: str
    version: int
    decision: Decision
    assertion: Assertion
    sign_count: int = 0  # the authenticator's counter in this assertion


class RegisteredPasskey(msgspec.Struct, frozen=True, kw_only=True):
    """One registered credential, as ``approvals passkeys export`` writes it: what a verifier
    needs to check assertions offline without trusting the service."""

    workspace_id: str
    member: str
    credential_id: str
    public_key: str  # base64url of the COSE public key
    algorithm: int  # COSE algorithm (-7: ES256, -257: RS256, -8: EdDSA)
    rp_id: str
    origin: str
    registered_at: datetime
    removed_at: datetime | None = None
    name: str = ""


class PasskeysExport(msgspec.Struct, frozen=True, kw_only=True):
    """The reply of ``approvals.query.<workspace>.passkeys``, and the file a verifier keeps."""

    ok: Literal[True] = True
    format: Literal["approvals-passkeys-v1"] = "approvals-passkeys-v1"
    passkeys: tuple[RegisteredPasskey, ...] = ()


_statement_encoder = msgspec.json.Encoder()
_statement_decoder = msgspec.json.Decoder(Statement)


def challenge(statement: Statement) -> bytes:
    """The WebAuthn challenge of a decision: ``PREFIX`` and the statement's compact JSON."""
    return PREFIX + _statement_encoder.encode(statement)


def statement_of(challenge_bytes: bytes) -> Statement | None:
    """The decision a challenge names, or None when it names none."""
    if not challenge_bytes.startswith(PREFIX):
        return None
    try:
        return _statement_decoder.decode(challenge_bytes[len(PREFIX) :])
    except msgspec.DecodeError:
        return None


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """base64url (padding optional); ValueError when it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not base64url: {error}") from None


def signed_statement(signed: SignedDecision) -> Statement | None:
    """The decision an assertion's client data names (its challenge), or None."""
    try:
        client_data = msgspec.json.decode(unb64(signed.assertion.client_data_json))
        return statement_of(unb64(str(client_data["challenge"])))
    except (ValueError, msgspec.DecodeError, KeyError, TypeError):
        return None
