"""Slack's interactivity endpoint: a button on a delivered message decides, verified.

The request must carry Slack's signature over its timestamp and body (checked by ``slack_sdk``'s
``SignatureVerifier``, which also refuses a timestamp over five minutes old). The message must be
in the Slack channel the approval's workspace delivers to (a button relayed from another
workspace's channel is refused), and the Slack user must be a member of that workspace through
the alias ``user:slack.<Slack user id>``. The decision goes through the command service as that
member; then the message is updated to show the approval as it now stands, and who decided.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

from litestar import MediaType, Request, Response, post
from slack_sdk.signature import SignatureVerifier

from approvals.schemas import subjects
from approvals.schemas.codec import reply_error
from approvals.services.delivery.adapters.base import DeliveryError
from approvals.services.delivery.adapters.slack import update
from approvals.services.delivery.notice import Outcome
from approvals.services.gateway.bus import Bus, GatewayError

DECISIONS = {"approve": "approve", "reject": "reject"}


def slack_alias(user_id: str) -> str:
    return f"user:slack.{user_id}"


@post("/integrations/slack/interactions", status_code=200, include_in_schema=False)
async def slack_interaction(request: Request[Any, Any, Any]) -> Response[Any]:
    settings = request.app.state.settings
    bus: Bus = request.app.state.bus
    if not settings.slack_signing_secret:
        raise GatewayError("not_found", "Slack is not set up here (APPROVALS_SLACK_SIGNING_SECRET)")
    body = await request.body()
    verifier = SignatureVerifier(settings.slack_signing_secret)
    if not verifier.is_valid_request(body, dict(request.headers)):
        raise GatewayError("unauthorized", "not signed by Slack, or signed too long ago")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        value = json.loads(action.get("value") or "{}")
        workspace, approval_id = str(value["w"]), str(value["a"])
        slack_channel, user = str(payload["channel"]["id"]), str(payload["user"]["id"])
        message_ts = str(payload["message"]["ts"])
    except (KeyError, IndexError, TypeError, ValueError):
        raise GatewayError("invalid", "not a Slack block action this service sent") from None
    verb = DECISIONS.get(action.get("action_id"))
    if verb is None or not subjects.is_token(workspace):
        return Response(content=b"", status_code=200)  # Details opens a link; nothing to do
    config = await bus.chat_member(workspace, "slack", "Slack", slack_channel, user)
    signer = slack_alias(user)
    command: dict[str, Any] = {
        "approval_id": approval_id,
        "approver": signer,
        "via": {"channel": "slack", "auth": "slack_signature", "ref": f"{slack_channel}/{user}"},
    }
    if verb == "approve":
        command["digest"] = str(value.get("d", ""))
    else:
        command["reason"] = "rejected in Slack"
    reply = await bus.command(workspace, verb, command)  # type: ignore[arg-type]
    version = None if reply_error(reply) else json.loads(reply)["approval"]["version"]
    await _show_outcome(settings, bus, workspace, approval_id, version, config.secret,
                        slack_channel, message_ts)  # fmt: skip
    return Response(content=reply, status_code=200, media_type=MediaType.JSON)


async def _show_outcome(
    settings: Any, bus: Bus, workspace: str, approval_id: str, version: int | None,
    secret: str | None, slack_channel: str, ts: str,
) -> None:  # fmt: skip
    """Replace the message's buttons with the approval as it stands (at least at ``version``,
    the one this decision made), so nobody acts on a stale message."""
    query: dict[str, Any] = {"approval_id": approval_id}
    if version is not None:
        query["min_version"] = version
    data = await bus.query(workspace, "get", query)
    token = os.environ.get(secret or "")
    if reply_error(data) or not token:
        return
    approval = json.loads(data)["approval"]
    if approval["status"] == "pending":
        return  # a vote towards a quorum: the buttons stay for the next approver
    outcome = Outcome(
        workspace_id=workspace, approval_id=approval_id, title=approval["title"],
        status=approval["status"], decided_by=approval.get("decided_by"),
        reason=approval.get("reason"), web_url=approval["web_url"],
    )  # fmt: skip
    with contextlib.suppress(DeliveryError):  # the decision stands; the message stays stale
        await update(settings, token, slack_channel, ts, outcome)


__all__ = ["slack_alias", "slack_interaction"]
