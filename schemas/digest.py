"""The digest that binds an approval to the exact action (what you see is what you sign)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from approvals.schemas.codec import canonical_encoder

if TYPE_CHECKING:
    from approvals.schemas.commands import Action


def action_digest(action: Action, proposed_payload: Any) -> str:
    """SHA-256 hex over the canonical JSON of action, scope, destination, payload and ceiling.

    Canonical means keys sorted at every depth and no insignificant whitespace; absent optional
    fields are normalised to ``null`` by the schema, so two requests for the same action always
    get the same digest and any change to what would run gives a different one.
    """
    document = {
        "action": {"kind": action.kind, "mode": action.mode, "provider": action.provider},
        "scope": action.scope,
        "destination": action.destination,
        "proposed_payload": proposed_payload,
        "max_credits": action.max_credits,
    }
    return hashlib.sha256(canonical_encoder.encode(document)).hexdigest()


# The fields of an action that its digest covers (a preview or an estimate may change freely).
DIGESTED_ACTION_FIELDS = ("kind", "mode", "provider", "scope", "destination", "max_credits")


def action_differences(approved: Action, action: Action) -> list[str]:
    """The digested fields of ``action`` that differ from ``approved`` (compared canonically, as
    the digest compares them), by name: never their approved values."""
    return [
        name
        for name in DIGESTED_ACTION_FIELDS
        if _canonical(getattr(approved, name)) != _canonical(getattr(action, name))
    ]


def payload_differs(approved: Any, payload: Any) -> bool:
    return _canonical(approved) != _canonical(payload)


def _canonical(value: Any) -> bytes:
    return canonical_encoder.encode(value)
