"""What the gateway asks of the services over NATS, with short caches for what rarely changes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

import msgspec
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from approvals.schemas import subjects
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.replies import ApiKeyReply, ApiKeyState, MembershipsReply, WorkspaceReply
from approvals.services.runtime import tracing

if TYPE_CHECKING:
    from nats.aio.client import Client

    from approvals.schemas.replies import WorkspaceState
    from approvals.schemas.subjects import CommandVerb
    from approvals.schemas.workspace import ChannelConfig

CACHE_S = 10.0  # settings, memberships and keys: a revocation or change is seen within this


class GatewayError(Exception):
    """A refusal in the one error shape, with the HTTP status it maps to."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


_api_key = msgspec.json.Decoder(ApiKeyReply)
_memberships = msgspec.json.Decoder(MembershipsReply)
_workspace = msgspec.json.Decoder(WorkspaceReply)


class Bus:
    def __init__(self, nc: Client, timeout_s: float = 10.0, cache_s: float = CACHE_S) -> None:
        self.nc = nc
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self.stopping = asyncio.Event()  # set when the gateway stops: long polls end at once

    async def ask(self, subject: str, body: Any, timeout_s: float | None = None) -> bytes:
        """One request/reply; ``unavailable`` when nobody answers."""
        try:
            msg = await self.nc.request(
                subject, encoder.encode(body), timeout=timeout_s or self.timeout_s,
                headers=(tracing.inject({}) or None) if tracing.ENABLED else None,
            )  # fmt: skip
        except NoRespondersError:
            raise GatewayError("unavailable", "no service answers; retry") from None
        except (NatsError, TimeoutError):
            raise GatewayError("unavailable", "the service did not answer in time; retry") from None
        return msg.data

    async def command(self, workspace: str, verb: CommandVerb, body: Any) -> bytes:
        return await self.ask(subjects.command(workspace, verb), body)

    async def query(
        self, workspace: str, verb: str, body: Any, timeout_s: float | None = None
    ) -> bytes:
        return await self.ask(subjects.query(workspace, verb), body, timeout_s)

    async def long_poll(self, workspace: str, verb: str, body: Any, timeout_s: float) -> bytes:
        """A query that may take ``timeout_s``, answered ``unavailable`` as soon as the gateway
        stops: it must not hold the stop (or a Ctrl-C) for as long as the poll lasts."""
        asking = asyncio.ensure_future(self.query(workspace, verb, body, timeout_s))
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({asking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if asking.done():
            return asking.result()
        asking.cancel()
        raise GatewayError("unavailable", "the gateway is stopping; retry")

    async def _cached(self, key: tuple[str, ...], load: Any) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        value = await load()
        self._cache[key] = (time.monotonic() + self.cache_s, value)
        return value

    async def memberships(self, member: str) -> dict[str, str]:
        """Workspace -> the member id ``member`` has there."""

        async def load() -> dict[str, str]:
            data = await self.ask(subjects.MEMBERSHIPS_QUERY, {"member": member})
            return {} if reply_error(data) else _memberships.decode(data).workspaces

        return await self._cached(("memberships", member), load)  # type: ignore[no-any-return]

    async def workspace(self, workspace: str) -> WorkspaceState | None:
        async def load() -> WorkspaceState | None:
            data = await self.query(workspace, "workspace", {})
            return None if reply_error(data) else _workspace.decode(data).workspace

        return await self._cached(("workspace", workspace), load)  # type: ignore[no-any-return]

    async def api_key(self, workspace: str, key_id: str) -> ApiKeyState | None:
        async def load() -> ApiKeyState | None:
            data = await self.query(workspace, "api_key", {"key_id": key_id})
            return None if reply_error(data) else _api_key.decode(data).key

        return await self._cached(("api_key", workspace, key_id), load)  # type: ignore[no-any-return]

    async def chat_member(
        self, workspace: str, kind: str, label: str, channel_id: str, user_id: str
    ) -> ChannelConfig:
        """For a button pressed in a chat app (``kind`` slack or discord): the workspace's channel
        the message is in, after checking that the user is a member through the alias
        ``user:<kind>.<user id>``; refuse another workspace's channel and unknown users."""
        ws = await self.workspace(workspace)
        channels = ws.settings.channel.items() if ws is not None else ()
        config = next(
            (c for name, c in channels if (c.kind or name) == kind and c.target == channel_id),
            None,
        )
        if config is None:
            raise GatewayError("forbidden", f"this {label} channel does not carry that workspace",
                               rule=f"{kind}_channel_of_workspace")  # fmt: skip
        if workspace not in await self.memberships(f"user:{kind}.{user_id}"):
            raise GatewayError("forbidden", f"{label} user {user_id} is not a member of "
                               f"{workspace}", rule="member_of_workspace")  # fmt: skip
        return config

    async def caller(self, workspace: str, authorization: str | None) -> str:
        """The member an ``Authorization: Bearer apk_<key id>.<secret>`` header acts as."""
        if not authorization or not authorization.startswith("Bearer "):
            raise GatewayError(
                "unauthorized", "an API key is required: Authorization: Bearer <key>"
            )
        token = authorization.removeprefix("Bearer ").strip()
        key_id, _, secret = token.removeprefix("apk_").partition(".")
        if not token.startswith("apk_") or not subjects.is_token(key_id) or not secret:
            raise GatewayError("unauthorized", "the API key is malformed")
        key = await self.api_key(workspace, key_id)
        presented = hashlib.sha256(secret.encode()).hexdigest()
        if key is None or not hmac.compare_digest(presented, key.secret_sha256):
            raise GatewayError("unauthorized", "the API key is not valid for this workspace")
        if key.revoked:
            raise GatewayError("unauthorized", "the API key was revoked")
        return key.actor
