"""Constrained field types shared by commands and events."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# msgspec matches a pattern with re.search, where `$` also matches before a final newline:
# `$(?!\n)` ends the string in Python and in JSON Schema alike, so "user:ana\n" is refused
# rather than slipping past the rule that the requester cannot approve.
END = r"$(?!\n)"
ACTOR_PATTERN = r"^(user|service|policy|grant):[A-Za-z0-9_.@+-]{1,128}" + END

Actor = Annotated[
    str,
    msgspec.Meta(
        pattern=ACTOR_PATTERN,
        description=(
            "Who or what acts: user:<id>, service:<name>, policy:<rule> or grant:<id> (a "
            "grant given with an approval approved it)."
        ),
        examples=["service:enricher", "user:ana"],
    ),
]
Person = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^user:[A-Za-z0-9_.@+-]{1,128}" + END,
        description="A person: user:<id>.",
    ),
]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
LongText = Annotated[str, msgspec.Meta(max_length=4000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Digest = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{64}" + END, description="SHA-256 hex of the canonical action."
    ),
]
Credits = Annotated[float, msgspec.Meta(ge=0)]

RiskLevel = Literal["low", "medium", "high", "critical"]
Mode = Literal["live", "dry_run", "smoke_test"]
ActionKind = Literal[
    "provider_call",
    "column_run",
    "crm_write",
    "outbound_enrollment",
    "linkedin_action",
    "campaign_sync",
    "workflow_fire",
    "read",
    "publish",
    "other",
]
# responded: a person answered with a message instead of deciding (never redeemable)
Status = Literal["pending", "approved", "rejected", "expired", "cancelled", "responded"]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"approved", "rejected", "expired", "cancelled", "responded"}
)
