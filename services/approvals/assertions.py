"""Checking passkeys with the ``webauthn`` library (py_webauthn): registrations, and assertions
over a decision's challenge.

One checker for the command service (before it records a decision), ``approvals verify`` (a
receipt's assertions, offline against an export of registered credentials) and ``approvals audit
verify`` (every signed decision in the log). Each refusal names its reason (``Refused.reason``):
the parts a verifier can name are read first (the challenge's decision field by field, the
origin, user verification, the counter); the library then checks everything, signature included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers import decode_credential_public_key, parse_authenticator_data
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse

from approvals.schemas.passkeys import SignedDecision, Statement, b64, signed_statement, unb64

if TYPE_CHECKING:
    from approvals.schemas.passkeys import Assertion


class Refused(Exception):
    """An assertion or registration that does not hold; ``reason`` is a stable name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Credential(NamedTuple):
    """What checking an assertion needs of a registered credential."""

    member: str
    credential_id: str
    public_key: str  # base64url COSE key
    rp_id: str
    origin: str


class Registered(NamedTuple):
    credential_id: str
    public_key: str
    algorithm: int
    sign_count: int


# The statement's fields, in the order a moved assertion is named by (the first that differs).
_FIELDS = ("workspace_id", "approval_id", "decision", "digest", "approver", "version")
_REASONS = {
    "workspace_id": "other_workspace",
    "approval_id": "other_approval",
    "decision": "other_decision",
    "digest": "other_digest",
    "approver": "other_member",
    "version": "other_version",
}


def check_registration(
    credential: dict[str, Any], challenge: bytes, rp_id: str, origin: str
) -> Registered:
    """A new credential from ``navigator.credentials.create()``, verified (user verification
    required); Refused ``registration_invalid`` otherwise."""
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origin, require_user_verification=True,
        )  # fmt: skip
    except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as error:
        raise Refused(
            "registration_invalid", f"the passkey registration does not hold: {error}"
        ) from None

    algorithm = int(decode_credential_public_key(verified.credential_public_key).alg)
    return Registered(
        credential_id=b64(verified.credential_id),
        public_key=b64(verified.credential_public_key),
        algorithm=algorithm,
        sign_count=verified.sign_count,
    )


def check(
    credential: Credential,
    expected: Statement,
    signed: SignedDecision,
    sign_count: int | None = None,
) -> int:
    """Check that ``signed`` is ``credential``'s assertion over exactly ``expected``; return the
    authenticator's counter in it.

    ``sign_count``: the credential's counter before this use (the command service knows it; a
    verifier reading a receipt later does not, and passes None: the counter is then not
    compared, since later uses moved it on).

    Raises:
        Refused: with the reason: ``wrong_credential``, ``other_member`` (of the credential),
            ``not_a_decision``, ``other_workspace``, ``other_approval``, ``other_decision``,
            ``other_digest``, ``other_member``, ``other_version``, ``origin_mismatch``,
            ``malformed``, ``user_not_verified``, ``replayed`` (the counter did not move
            forward) or ``signature_invalid``.
    """
    assertion = signed.assertion
    if assertion.credential_id != credential.credential_id:
        raise Refused("wrong_credential", "the assertion was made with another credential")
    if signed.member != credential.member:
        raise Refused("other_member", f"the credential is registered to {credential.member}, "
                      f"not to {signed.member}")  # fmt: skip
    _require_statement(expected, signed)
    client_data = _client_data(assertion)
    if client_data.get("type") != "webauthn.get":
        raise Refused("malformed", "the client data is not of an assertion (webauthn.get)")
    if client_data.get("origin") != credential.origin:
        raise Refused("origin_mismatch", f"the assertion was made at {client_data.get('origin')!r}"
                      f", the credential was registered at {credential.origin!r}")  # fmt: skip
    counter = _counter(assertion, sign_count)
    try:
        verify_authentication_response(
            credential=_as_json(assertion),
            expected_challenge=unb64(str(client_data["challenge"])),
            expected_rp_id=credential.rp_id,
            expected_origin=credential.origin,
            credential_public_key=unb64(credential.public_key),
            credential_current_sign_count=sign_count if sign_count is not None else 0,
            require_user_verification=True,
        )
    except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as error:
        raise Refused(
            "signature_invalid", f"the passkey signature does not hold: {error}"
        ) from None
    return counter


def _require_statement(expected: Statement, signed: SignedDecision) -> None:
    statement = signed_statement(signed)
    if statement is None:
        raise Refused("not_a_decision", "the assertion's challenge names no decision")
    for field in _FIELDS:
        was, wanted = getattr(statement, field), getattr(expected, field)
        if was != wanted:
            raise Refused(_REASONS[field], f"the assertion signs {field} {was}, "
                          f"not this decision's {wanted}")  # fmt: skip


def _client_data(assertion: Assertion) -> dict[str, Any]:
    try:
        data = msgspec.json.decode(unb64(assertion.client_data_json))
    except (ValueError, msgspec.DecodeError):
        raise Refused("malformed", "the client data is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("challenge"), str):
        raise Refused("malformed", "the client data has no challenge")
    return data


def _counter(assertion: Assertion, sign_count: int | None) -> int:
    try:
        parsed = parse_authenticator_data(unb64(assertion.authenticator_data))
    except Exception as error:  # the library raises several kinds on bad bytes
        raise Refused("malformed", f"the authenticator data does not parse: {error}") from None
    if not parsed.flags.uv:
        raise Refused("user_not_verified", "the authenticator did not verify the user")
    counter = parsed.sign_count
    if sign_count is not None and (counter or sign_count) and counter <= sign_count:
        raise Refused("replayed", f"the authenticator's counter {counter} did not move past "
                      f"{sign_count}: an assertion used before")  # fmt: skip
    return counter


def counter_of(assertion: Assertion) -> int:
    """The authenticator's counter in an assertion (0 when it cannot be read)."""
    try:
        return int(parse_authenticator_data(unb64(assertion.authenticator_data)).sign_count)
    except Exception:  # the library raises several kinds on bad bytes
        return 0


def _as_json(assertion: Assertion) -> dict[str, Any]:
    response: dict[str, Any] = {
        "authenticatorData": assertion.authenticator_data,
        "clientDataJSON": assertion.client_data_json,
        "signature": assertion.signature,
    }
    if assertion.user_handle is not None:
        response["userHandle"] = assertion.user_handle
    return {"id": assertion.credential_id, "rawId": assertion.credential_id,
            "type": "public-key", "response": response}  # fmt: skip
