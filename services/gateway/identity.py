"""Who is at the browser: an authenticating proxy's header, or a signed session cookie set by a
one-time sign-in link (or, under ``approvals dev`` only, the development sign-in).

A one-time link carries the member, a random nonce and an expiry, signed with HMAC-SHA256 under
the gateway secret; following it shows a page whose POST consumes the nonce in a JetStream
key-value bucket (``create`` fails for a nonce already used) and only then signs the person in.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyWrongLastSequenceError

from approvals.services.runtime.bus import ensure_kv
from approvals.services.runtime.signed_links import LinkInvalid, derive, seal, unseal

if TYPE_CHECKING:
    from litestar import Request
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from approvals.services.runtime.settings import Settings

LINKS_BUCKET = "approvals_sign_in_links"
LINK_TTL_S = 15 * 60
SESSION_KEY = "member"
METHOD_KEY = "signed_in_by"  # how the session was signed in: dev, link


def person_name(value: str) -> str:
    """``ana`` -> ``user:ana``; a name that already says what it is stays as it is."""
    value = value.strip()
    return value if value.startswith("user:") else f"user:{value}"


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
