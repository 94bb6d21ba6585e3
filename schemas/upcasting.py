"""Reading events of every released schema version as the current one.

An upcaster takes an event of one version (as a JSON object) and returns it as the next version;
they run in turn until the event is current, then the current Struct decodes it. An event of a
version newer than this code knows is refused with ``UnknownSchemaVersion``: a service that meets
one must be upgraded, never guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from approvals.schemas.events import EVENT_TYPES, SCHEMA_VERSION, AnyEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownSchemaVersion(Exception):
    """An event written by a newer version of the service (or with no way up to this one)."""

    def __init__(self, event_type: object, version: object) -> None:
        super().__init__(
            f"event {event_type!r} has schema version {version!r}; this service reads versions "
            f"1 to {SCHEMA_VERSION}: upgrade it before it reads this store or stream"
        )
        self.event_type = event_type
        self.version = version


def _v1_to_v2(event: dict[str, Any]) -> dict[str, Any]:
    # Version 1 recorded neither the door nor the chain: say so explicitly rather than leave it
    # to a default a version 2 event must never fall back on.
    return {**event, "schema_version": 2, "via": None, "hash": ""}


TAGS = tuple(str(cls.__struct_config__.tag) for cls in EVENT_TYPES)
# (event type, the version it reads) -> the upcaster to the next version
UPCASTERS: dict[tuple[str, int], Upcaster] = {(tag, 1): _v1_to_v2 for tag in TAGS}


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (an event as a JSON object) brought to the current version."""
    event_type, version = raw.get("type"), raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise msgspec.ValidationError(f"schema_version must be a positive integer, not {version!r}")
    while version < SCHEMA_VERSION:
        upcaster = UPCASTERS.get((str(event_type), version))
        if upcaster is None:
            raise UnknownSchemaVersion(event_type, version)
        raw = upcaster(raw)
        version = raw["schema_version"]
    if version > SCHEMA_VERSION:
        raise UnknownSchemaVersion(event_type, version)
    return raw


class EventDecoder:
    """Decodes stored or published event JSON of any released version as the current Struct.

    Current events take one typed decode; only older ones go the slow way (decode as a map,
    upcast, decode typed).
    """

    def __init__(self) -> None:
        self._typed = msgspec.json.Decoder(AnyEvent)
        self._many = msgspec.json.Decoder(list[AnyEvent])

    def decode(self, data: bytes | str) -> AnyEvent:
        try:
            event = self._typed.decode(data)
        except msgspec.ValidationError:
            return self._upcast(data)  # an older shape, or invalid: the slow path tells which
        if event.schema_version == SCHEMA_VERSION:
            return event
        return self._upcast(data)

    def decode_many(self, documents: list[bytes]) -> list[AnyEvent]:
        """Many events at once: one typed decode of them all when every one is current."""
        try:
            decoded = self._many.decode(b"[" + b",".join(documents) + b"]")
        except msgspec.ValidationError:
            return [self.decode(document) for document in documents]
        current = SCHEMA_VERSION
        if all(event.schema_version == current for event in decoded):
            return decoded
        return [
            event if event.schema_version == current else self._upcast(document)
            for event, document in zip(decoded, documents, strict=True)
        ]

    def _upcast(self, data: bytes | str) -> AnyEvent:
        raw = msgspec.json.decode(data)
        if not isinstance(raw, dict):
            raise msgspec.ValidationError("an event must be a JSON object")
        if raw.get("schema_version", 1) == SCHEMA_VERSION:
            return self._typed.decode(data)  # current and still refused: raise the real error
        return self._typed.decode(msgspec.json.encode(upcast(raw)))
