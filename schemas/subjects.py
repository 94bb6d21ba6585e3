"""Subject names on the bus and the token rule that keeps tenants apart."""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

STREAM: Final = "APPROVALS_EVENTS"
CHECKPOINT_STREAM: Final = "APPROVALS_CHECKPOINTS"
CHECKPOINTS: Final = "approvals.audit.checkpoints"  # signed checkpoints of the whole log
COMMAND_QUEUE: Final = "approvals-commands"
EVENTS_WILDCARD: Final = "approvals.events.>"
RELAY_NUDGE: Final = "approvals.relay.nudge"  # a command service instance committed: publish
# Commands an instance without the relay's lease hands to the one that holds it:
# approvals.lead.<workspace>.<verb>, the body and headers as the caller sent them.
COMMAND_LEAD: Final = "approvals.lead"
COMMAND_LEAD_WILDCARD: Final = "approvals.lead.*.*"

# Headers the relay sets on every published event.
MSG_ID_HEADER: Final = "Nats-Msg-Id"
NOTIFICATION_ID_HEADER: Final = "Approvals-Notification-Id"

CommandVerb = Literal[
    "request",
    "approve",
    "reject",
    "cancel",
    "expire",
    "deliver",
    "check",
    "configure",
    "delegate",
    "redeem",
    "report",
    "check_spend",
    "remind",
    "escalate",
    "release",
    "create_api_key",
    "revoke_api_key",
    "revoke_grant",
    "respond",
    "register_passkey",
    "remove_passkey",
]
COMMAND_VERBS: Final[tuple[CommandVerb, ...]] = get_args(CommandVerb)

TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_TOKEN = re.compile(TOKEN_PATTERN)


class IllegalToken(ValueError):
    """A value that may not be placed in a subject."""


def is_token(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


def token(value: str, what: str = "token") -> str:
    """Return ``value`` if it may stand as one subject token, else raise IllegalToken."""
    if not is_token(value):
        # Said in words (the pattern is TOKEN_PATTERN): a person reads this in the CLI.
        raise IllegalToken(
            f"{what} {value!r} may hold only letters, digits, '-' and '_', 1 to 64 of them"
        )
    return value


def command(workspace: str, verb: CommandVerb) -> str:
    return f"approvals.cmd.{token(workspace, 'workspace')}.{verb}"


def command_wildcard(verb: CommandVerb) -> str:
    return f"approvals.cmd.*.{verb}"


def event(workspace: str, approval_id: str, event_type: str) -> str:
    return (
        f"approvals.events.{token(workspace, 'workspace')}."
        f"{token(approval_id, 'approval id')}.{token(event_type, 'event type')}"
    )


def events_of(workspace: str = "*", approval_id: str = "*") -> str:
    """Filter subject for the events of one workspace and/or one approval."""
    ws = workspace if workspace == "*" else token(workspace, "workspace")
    aid = approval_id if approval_id == "*" else token(approval_id, "approval id")
    return f"approvals.events.{ws}.{aid}.*"


def workspace_of(subject: str) -> str:
    """The workspace token of a command or event subject (its third token)."""
    parts = subject.split(".")
    if len(parts) < 4:
        raise IllegalToken(f"subject {subject!r} has no workspace token")
    return token(parts[2], "workspace")


def msg_id(approval_id: str, version: int) -> str:
    return f"{approval_id}:{version}"


def query(workspace: str, verb: str) -> str:
    return f"approvals.query.{token(workspace, 'workspace')}.{token(verb, 'verb')}"


def query_wildcard(verb: str) -> str:
    return f"approvals.query.*.{verb}"


KEYS_QUERY: Final = "approvals.query.keys"  # the public keys receipts are signed with
MEMBERSHIPS_QUERY: Final = "approvals.query.memberships"  # the workspaces a person belongs to


def alerts(workspace: str, kind: str) -> str:
    return f"approvals.alerts.{token(workspace, 'workspace')}.{token(kind, 'alert kind')}"
