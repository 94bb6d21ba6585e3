"""Who is at the browser: an authenticating proxy's header, or a signed session cookie set by a
one-time sign-in link (or, under ``approvals dev`` only, the development sign-in).

A one-time link carries the member, a random nonce and an expiry, signed with HMAC-SHA256 under
the gateway secret; following it shows a page whose POST consumes the nonce in a JetStream
key-value bucket (``create`` fails for a nonce already used) and only then signs the person in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyWrongLastSequenceError

from approvals.services.runtime.bus import ensure_kv

if TYPE_CHECKING:
    from litestar import Request
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from approvals.services.runtime.settings import Settings

LINKS_BUCKET = "approvals_sign_in_links"
LINK_TTL_S = 15 * 60
SESSION_KEY = "member"
METHOD_KEY = "signed_in_by"  # how the session was signed in: dev, link


def derive(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (sessions, CSRF, links) from the one gateway secret."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def person_name(value: str) -> str:
    """``ana`` -> ``user:ana``; a name that already says what it is stays as it is."""
    value = value.strip()
    return value if value.startswith("user:") else f"user:{value}"


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


class Identity:
    def __init__(self, settings: Settings, secret: bytes) -> None:
        self.header = settings.trusted_header
        self.proxies = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in settings.trusted_proxies.split(",")
            if part.strip()
        ]
        self.dev_sign_in = settings.dev_sign_in
        self._link_key = derive(secret, "sign-in link")
        self._links: KeyValue | None = None

    async def start(self, js: JetStreamContext) -> None:
        self._links = await ensure_kv(js, LINKS_BUCKET)

    def person(self, request: Request[Any, Any, Any]) -> str | None:
        """The signed-in person, or None."""
        if self.header and self._from_proxy(request):
            value = request.headers.get(self.header)
            if value:
                return person_name(value)
        session = request.scope.get("session")
        member = session.get(SESSION_KEY) if isinstance(session, dict) else None
        return member if isinstance(member, str) else None

    def method(self, request: Request[Any, Any, Any]) -> str:
        """How the signed-in person proved who they are: ``trusted_header``, ``link``, ``dev``."""
        if self.header and self._from_proxy(request) and request.headers.get(self.header):
            return "trusted_header"
        session = request.scope.get("session")
        method = session.get(METHOD_KEY) if isinstance(session, dict) else None
        return method if isinstance(method, str) else "session"

    def _from_proxy(self, request: Request[Any, Any, Any]) -> bool:
        host = request.client.host if request.client else None
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    # -- one-time links ------------------------------------------------------------------

    def link_token(self, member: str, ttl_s: int = LINK_TTL_S, now: float | None = None) -> str:
        expiry = int((now or time.time()) + ttl_s)
        return seal(self._link_key, {"m": member, "n": secrets.token_urlsafe(16), "e": expiry})

    def check_link(self, token: str, now: float | None = None) -> tuple[str, str]:
        """The member and nonce of a genuine, unexpired link (not yet whether it was used)."""
        fields = unseal(self._link_key, token, now)
        return str(fields["m"]), str(fields["n"])

    async def consume_link(self, token: str) -> str:
        """Sign in with a link, once: the member it names."""
        member, nonce = self.check_link(token)
        assert self._links is not None, "start() first"
        try:
            await self._links.create(nonce, member.encode())
        except KeyWrongLastSequenceError:
            raise LinkInvalid("this sign-in link was used already") from None
        return member


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
