"""JSON Schema for every message, generated from the Structs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from approvals.schemas.alerts import BudgetAlert
from approvals.schemas.audit import Checkpoint
from approvals.schemas.commands import COMMANDS
from approvals.schemas.events import EVENT_TYPES
from approvals.schemas.receipts import KeysReply, Receipt
from approvals.schemas.replies import ErrorReply, Reply

if TYPE_CHECKING:
    from pathlib import Path


def message_types() -> dict[str, type[msgspec.Struct]]:
    """Every message on the wire, by the file name its schema is exported to."""
    types: dict[str, type[msgspec.Struct]] = {}
    for verb, command in COMMANDS.items():
        types[f"command.{verb}"] = command
    for event in EVENT_TYPES:
        types[f"event.{event.__struct_config__.tag}"] = event
    types["reply.ok"] = Reply
    types["reply.error"] = ErrorReply
    types["reply.keys"] = KeysReply
    types["receipt"] = Receipt
    types["alert.budget"] = BudgetAlert
    types["audit.checkpoint"] = Checkpoint
    return types


def schemas() -> dict[str, bytes]:
    """File name -> JSON Schema document, formatted stably so a diff shows a real change."""
    documents: dict[str, bytes] = {}
    for name, cls in message_types().items():
        document: dict[str, Any] = msgspec.json.schema(cls)
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["title"] = name
        encoded = msgspec.json.encode(document, order="sorted")
        documents[f"{name}.json"] = msgspec.json.format(encoded, indent=2) + b"\n"
    return documents


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in schemas().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
