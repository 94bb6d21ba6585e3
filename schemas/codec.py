"""The one set of encoders and decoders, created once at import."""

from __future__ import annotations

import msgspec

from approvals.schemas.commands import COMMANDS, Command
from approvals.schemas.replies import AnyReply
from approvals.schemas.upcasting import EventDecoder

encoder = msgspec.json.Encoder()
# Canonical JSON for digests: keys sorted at every depth.
canonical_encoder = msgspec.json.Encoder(order="sorted")

event_decoder = EventDecoder()
reply_decoder = msgspec.json.Decoder(AnyReply)
command_decoders: dict[str, msgspec.json.Decoder[Command]] = {
    verb: msgspec.json.Decoder(cls) for verb, cls in COMMANDS.items()
}


class EventEnvelope(msgspec.Struct, frozen=True):
    """The few fields the relay needs to route a stored event; the rest is skipped unparsed."""

    type: str
    workspace_id: str


envelope_decoder = msgspec.json.Decoder(EventEnvelope)


def encode_error(code: str, message: str, details: dict[str, object] | None = None) -> bytes:
    """The one error shape: ``{"ok": false, "error": {"code", "message", "details"}}``."""
    return encoder.encode(
        {"ok": False, "error": {"code": code, "message": message, "details": details or {}}}
    )
