"""The digest that binds an approval to the exact action (what you see is what you sign)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from schemas.codec import canonical_encoder

if TYPE_CHECKING:
    from schemas.commands import Action


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
