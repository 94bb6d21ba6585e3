"""The one set of encoders and decoders, created once at import."""

from __future__ import annotations

import msgspec

from approvals.schemas.commands import COMMANDS, Command
from approvals.schemas.replies import AnyReply, Envelope, ErrorBody
from approvals.schemas.upcasting import EventDecoder

encoder = msgspec.json.Encoder()
# Canonical JSON for digests: keys sorted at every depth.
canonical_encoder = msgspec.json.Encoder(order="sorted")

event_decoder = EventDecoder()
reply_decoder = msgspec.json.Decoder(AnyReply)
reply_envelope = msgspec.json.Decoder(Envelope)
NO_REASON = ErrorBody(code="internal", message="refused without a reason")
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


def reply_error(data: bytes) -> ErrorBody | None:
    """None for a reply that succeeded; the typed error of one that did not (a refusal without
    an error reads as ``internal``). What is not a reply raises ``msgspec.DecodeError``."""
    envelope = reply_envelope.decode(data)
    if envelope.ok:
        return None
    return envelope.error or NO_REASON
