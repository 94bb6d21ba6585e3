"""A software WebAuthn authenticator for tests: an ES256 key (``cryptography``), its COSE public
key and attestation object encoded with ``cbor2`` (what the ``webauthn`` library decodes), and
assertions signed over ``authenticatorData || SHA-256(clientDataJSON)`` as a platform
authenticator makes them, user verified. The service checks them with the ``webauthn`` library,
exactly as it checks a browser's. (soft-webauthn on PyPI sets no user-verified flag and pins
fido2 below 2, so it cannot stand in here.)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from approvals.schemas.passkeys import Assertion, Statement, b64, challenge

RP_ID = "approvals.test"
ORIGIN = "https://approvals.test"
UP, UV, AT = 0x01, 0x04, 0x40


class Authenticator:
    def __init__(self, rp_id: str = RP_ID, origin: str = ORIGIN) -> None:
        self.rp_id, self.origin = rp_id, origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_raw = os.urandom(32)
        self.sign_count = 0

    @property
    def credential_id(self) -> str:
        return b64(self.credential_raw)

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})  # fmt: skip

    def _client_data(self, kind: str, challenge_bytes: bytes, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": b64(challenge_bytes), "origin": origin or self.origin,
                "crossOrigin": False}  # fmt: skip
        return json.dumps(data).encode()

    def register(self, challenge_bytes: bytes) -> dict[str, Any]:
        """What ``navigator.credentials.create()`` returns, in its JSON form."""
        rp_hash = hashlib.sha256(self.rp_id.encode()).digest()
        attested = (b"\x00" * 16 + struct.pack(">H", len(self.credential_raw))
                    + self.credential_raw + self._cose_key())  # fmt: skip
        auth_data = rp_hash + bytes([UP | UV | AT]) + struct.pack(">I", 0) + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", challenge_bytes, None)
        return {
            "id": self.credential_id, "rawId": self.credential_id, "type": "public-key",
            "response": {"clientDataJSON": b64(client_data),
                         "attestationObject": b64(attestation)},
        }  # fmt: skip

    def assert_challenge(
        self, challenge_bytes: bytes, *, verified: bool = True, origin: str | None = None,
        count: int | None = None,
    ) -> Assertion:  # fmt: skip
        """Sign ``challenge_bytes`` (``navigator.credentials.get()``), the counter moving on."""
        self.sign_count = count if count is not None else self.sign_count + 1
        rp_hash = hashlib.sha256(self.rp_id.encode()).digest()
        flags = UP | (UV if verified else 0)
        auth_data = rp_hash + bytes([flags]) + struct.pack(">I", self.sign_count)
        client_data = self._client_data("webauthn.get", challenge_bytes, origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return Assertion(credential_id=self.credential_id, authenticator_data=b64(auth_data),
                         client_data_json=b64(client_data), signature=b64(signature))  # fmt: skip

    def sign(self, statement: Statement, **options: Any) -> Assertion:
        """An assertion over a decision's challenge."""
        return self.assert_challenge(challenge(statement), **options)
