"""Webhooks: the notice POSTed as JSON, signed per the Standard Webhooks specification (the
``standardwebhooks`` library) with the endpoint's own secret. A destination that resolves to a
private, loopback, link-local or otherwise non-public address is refused unless its network is
allowed in ``APPROVALS_WEBHOOK_ALLOW`` (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from approvals.schemas.codec import encoder
from approvals.services.delivery.adapters.base import DeliveryError, secret_of

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings

EVENT_TYPE = "approval.requested"


class WebhookAdapter:
    kind: ClassVar[str] = "webhook"

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.delivery_timeout_s
        self.allowed = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in settings.webhook_allow.split(",")
            if part.strip()
        ]

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        return await self.post(channel, EVENT_TYPE, notice, delivery_id)

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        await self.post(channel, f"approval.{outcome.status}", outcome, delivery_id)

    async def post(
        self, channel: ChannelConfig, event_type: str, data: object, delivery_id: str
    ) -> str:
        url = channel.target or ""
        address = await self.check_destination(url)
        now = datetime.now(UTC)
        body = encoder.encode({"type": event_type, "timestamp": now, "data": data}).decode()
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),  # the time the signature covers
            "webhook-signature": Webhook(secret_of(channel)).sign(delivery_id, now, body),
        }
        # Connect to the address just checked, not to whatever the name resolves to next (DNS
        # rebinding); the name still goes in the Host header and, for TLS, in SNI and the check
        # of the certificate.
        parts = urlsplit(url)
        host = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()
        headers["host"] = parts.netloc
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                response = await http.post(pinned, content=body, headers=headers,
                                           extensions={"sni_hostname": parts.hostname})  # fmt: skip
        except httpx.HTTPError as error:
            raise DeliveryError(f"POST {url} failed: {error!r}") from None
        if not response.is_success:
            permanent = 400 <= response.status_code < 500 and response.status_code != 429
            raise DeliveryError(f"POST {url} answered {response.status_code}",
                                permanent=permanent)  # fmt: skip
        return delivery_id

    async def check_destination(self, url: str) -> str:
        """The address to connect to; refuse what is not http(s), and a name that resolves to
        any address that is not public unless its network is allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(f"not an http(s) URL: {url!r}", permanent=True)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            loop = asyncio.get_running_loop()
            found = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise DeliveryError(f"cannot resolve {parts.hostname}: {error}") from None
        for *_, sockaddr in found:
            address = ipaddress.ip_address(sockaddr[0])
            if address.is_global or any(address in network for network in self.allowed):
                continue
            raise DeliveryError(
                f"{parts.hostname} resolves to {address}, which is not public: refused (allow "
                "its network in APPROVALS_WEBHOOK_ALLOW if it is yours)", permanent=True,
            )  # fmt: skip
        return str(found[0][4][0])
