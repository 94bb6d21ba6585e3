"""The hash chain that makes the event log tamper-evident: the definition auditors re-implement.

- ``content``: the canonical JSON (keys sorted at every depth, no spaces) of a stored event
  without its top-level ``hash`` field.
- An event's ``hash`` (its link): SHA-256 hex of ``previous link`` + ``content``, where the
  previous link is that of the event before it in the same aggregate (its approval, its budget
  period, ...) and the empty string for an aggregate's first event. Version 1 events, stored
  before the chain existed, carry no hash, but their links are computed all the same and the
  next event chains onto them.
- The log hash after an event: SHA-256 hex of ``log hash before`` + ``stored hash`` + ``content``,
  starting from the empty string, over every event in notification order. Signed checkpoints
  publish it with the position (notification id) it covers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from approvals.schemas.codec import canonical_encoder

GENESIS = ""  # the "previous link" of an aggregate's first event, and the log hash of nothing


def content(raw: dict[str, Any]) -> bytes:
    """The bytes a link covers: the event as a JSON object (decoded, any shape) minus ``hash``."""
    if "hash" in raw:
        raw = {k: v for k, v in raw.items() if k != "hash"}
    return canonical_encoder.encode(raw)


def link(previous: str, body: bytes) -> str:
    return hashlib.sha256(previous.encode("ascii") + body).hexdigest()


def fold(log_hash: str, stored_hash: str, body: bytes) -> str:
    """The log hash after one more event (``stored_hash`` as the event carries it, or "")."""
    return hashlib.sha256((log_hash + stored_hash).encode("ascii") + body).hexdigest()
