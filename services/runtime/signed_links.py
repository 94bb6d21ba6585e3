"""Signed links: tokens sealed with HMAC-SHA256 under a key derived from the gateway secret.

Two processes share them, so they live here rather than in either: the delivery service issues
the email's confirm links (``ConfirmTokens.issue``), the gateway checks and consumes them on the
confirmation page, and seals its own sign-in links with the same ``seal``/``unseal``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyWrongLastSequenceError

from approvals.services.runtime.bus import ensure_kv

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from approvals.services.runtime.settings import Settings


def derive(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (sessions, CSRF, links) from the one gateway secret."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkInvalid(ValueError):
    pass


def seal(key: bytes, fields: dict[str, Any]) -> str:
    """``fields`` as a token: compact JSON and its HMAC-SHA256, both base64url."""
    payload = json.dumps(fields, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def unseal(key: bytes, token: str, now: float | None = None) -> dict[str, Any]:
    """The fields of a token sealed with ``key`` whose expiry ``e`` has not passed."""
    try:
        payload_text, signature_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except ValueError:
        raise LinkInvalid("this link is malformed") from None
    if not hmac.compare_digest(signature, hmac.new(key, payload, hashlib.sha256).digest()):
        raise LinkInvalid("this link was not issued here")
    fields: dict[str, Any] = json.loads(payload)
    if (now or time.time()) > fields["e"]:
        raise LinkInvalid("this link has expired")
    return fields


CONFIRM_BUCKET = "approvals_confirm_links"


class ConfirmTokens:
    """The tokens of email links: approval, decision and recipient, signed, until the request's
    deadline; used once (the nonce is consumed in ``approvals_confirm_links``)."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive(secret, "email confirmation")

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfirmTokens | None:
        if not settings.gateway_secret:
            return None
        return cls(hashlib.sha256(settings.gateway_secret.encode()).digest())

    def issue(self, approval_id: str, decision: str, recipient: str, expires_at: Any) -> str:
        fields = {"a": approval_id, "d": decision, "r": recipient,
                  "n": secrets.token_urlsafe(16), "e": int(expires_at.timestamp())}  # fmt: skip
        return seal(self._key, fields)

    def check(self, token: str, approval_id: str, now: float | None = None) -> dict[str, Any]:
        fields = unseal(self._key, token, now)
        if fields["a"] != approval_id:
            raise LinkInvalid("this link is for another approval")
        return fields

    async def consume(self, js: JetStreamContext, fields: dict[str, Any]) -> None:
        used = await ensure_kv(js, CONFIRM_BUCKET)
        try:
            await used.create(fields["n"], str(fields["a"]).encode())
        except KeyWrongLastSequenceError:
            raise LinkInvalid("this link was used already") from None
