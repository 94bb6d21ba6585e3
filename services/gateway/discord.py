"""Discord's interactions endpoint: a button on a delivered message decides, verified.

Discord signs each interaction with the application's Ed25519 key over the timestamp and the
body (``X-Signature-Ed25519``, ``X-Signature-Timestamp``): checked with ``cryptography``, and a
timestamp over five minutes old is refused as a replay. A PING is answered as Discord requires.
A button decides only from a Discord channel its workspace delivers to, by a Discord user who is
a member through the alias ``user:discord.<Discord user id>``; the answer updates the message in
place to the outcome and who decided (or, refused, tells only the one who clicked).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar import MediaType, Request, Response, post

from approvals.schemas import subjects
from approvals.schemas.codec import reply_error
from approvals.services.delivery.adapters.discord import (
    APPROVE,
    CONTENT,
    REJECT,
    outcome_message,
    parse_custom_id,
)
from approvals.services.delivery.fitting import fit
from approvals.services.delivery.notice import Outcome
from approvals.services.gateway.bus import Bus, GatewayError

if TYPE_CHECKING:
    from approvals.schemas.subjects import CommandVerb

PONG, UPDATE_MESSAGE, MESSAGE = 1, 7, 4
EPHEMERAL = 64
MAX_AGE_S = 300


def discord_alias(user_id: str) -> str:
    return f"user:discord.{user_id}"


def verify(public_key_hex: str, headers: Any, body: bytes, now: float | None = None) -> None:
    signature, timestamp = headers.get("x-signature-ed25519"), headers.get("x-signature-timestamp")
    if not signature or not timestamp:
        raise GatewayError("unauthorized", "not signed by Discord")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature), timestamp.encode() + body)
    except (ValueError, InvalidSignature):
        raise GatewayError("unauthorized", "not signed by Discord") from None
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > MAX_AGE_S:
        raise GatewayError("unauthorized", "signed too long ago: a replay")


def answer(kind: int, data: dict[str, Any]) -> Response[Any]:
    return Response(content=json.dumps({"type": kind, "data": data}).encode(), status_code=200,
                    media_type=MediaType.JSON)  # fmt: skip


@post("/integrations/discord/interactions", status_code=200, include_in_schema=False)
async def discord_interaction(request: Request[Any, Any, Any]) -> Response[Any]:
    settings = request.app.state.settings
    bus: Bus = request.app.state.bus
    if not settings.discord_public_key:
        raise GatewayError("not_found", "Discord is not set up here (APPROVALS_DISCORD_PUBLIC_KEY)")
    body = await request.body()
    verify(settings.discord_public_key, request.headers, body)
    try:
        interaction = json.loads(body)
        if interaction.get("type") == 1:
            return Response(content=json.dumps({"type": PONG}).encode(), status_code=200,
                            media_type=MediaType.JSON)  # fmt: skip
        verb, approval_id, workspace = parse_custom_id(str(interaction["data"]["custom_id"]))
        user = (interaction.get("member") or {}).get("user") or interaction["user"]
        user_id, channel_id = str(user["id"]), str(interaction["channel_id"])
    except (KeyError, TypeError, ValueError):
        raise GatewayError("invalid", "not a Discord interaction this service sent") from None
    if verb not in (APPROVE, REJECT) or not subjects.is_token(workspace):
        raise GatewayError("invalid", "not a button this service sent")
    await bus.chat_member(workspace, "discord", "Discord", channel_id, user_id)
    signer = discord_alias(user_id)
    data = await bus.query(workspace, "get", {"approval_id": approval_id})
    if reply_error(data):
        raise GatewayError("not_found", "no such approval in this workspace")
    got = json.loads(data)
    command: dict[str, Any] = {
        "approval_id": approval_id,
        "approver": signer,
        "via": {
            "channel": "discord",
            "auth": "discord_signature",
            "ref": f"{channel_id}/{user_id}",
        },
    }
    if verb == APPROVE:
        command["digest"] = got["approval"]["digest"]  # the request's, which the embed shows
    else:
        command["reason"] = "rejected in Discord"
    decision: CommandVerb = "approve" if verb == APPROVE else "reject"
    data = await bus.command(workspace, decision, command)
    if error := reply_error(data):
        return answer(MESSAGE, {"content": fit(f"{error.code}: {error.message}", CONTENT),
                                "flags": EPHEMERAL})  # fmt: skip
    reply = json.loads(data)
    state = reply["approval"]
    if state["status"] == "pending":
        votes = f"{len(state['votes'])} of {state['quorum']} approvals"
        return answer(MESSAGE, {"content": f"Your vote counts: {votes}.", "flags": EPHEMERAL})
    outcome = Outcome(workspace_id=workspace, approval_id=approval_id, title=state["title"],
                      status=state["status"], decided_by=state["decided_by"],
                      reason=state["reason"], web_url=state["web_url"])  # fmt: skip
    return answer(UPDATE_MESSAGE, outcome_message(outcome))


__all__ = ["discord_alias", "discord_interaction"]
