"""The web inbox's "Edit, then approve" form: built from the request's ``payload_schema`` where
it can be (an action-specific form), a JSON editor where it cannot, and read back into the
``edits`` of an ``approve`` command. The command service checks the edits again, whatever the
browser did: this module only translates a form."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

SIMPLE = ("string", "number", "integer", "boolean")


class Field(NamedTuple):
    """One payload property as a form input (``kind`` "json": a JSON editor for that value)."""

    name: str
    kind: str  # string, number, integer, boolean, enum or json
    value: Any
    required: bool
    schema: dict[str, Any]

    @property
    def text(self) -> str:
        """The value as the input shows it."""
        if self.kind == "json":
            return json.dumps(self.value, indent=2, ensure_ascii=False)
        return "" if self.value is None else str(self.value)


def fields(schema: dict[str, Any] | None, payload: Any) -> list[Field] | None:
    """The inputs for an object payload described by ``schema``; None: use the JSON editor."""
    properties = (schema or {}).get("properties")
    if not schema or schema.get("type") != "object" or not isinstance(properties, dict):
        return None
    if payload is not None and not isinstance(payload, dict):
        return None
    current = payload or {}
    required = set(schema.get("required") or ())
    found = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = "enum" if "enum" in spec else spec.get("type")
        found.append(Field(name, kind if kind == "enum" or kind in SIMPLE else "json",
                           current.get(name), name in required, spec))  # fmt: skip
    return found


class FormError(ValueError):
    """The form cannot be read as edits (malformed JSON, a number that is not one)."""


def edits(
    form: dict[str, Any], checked_rows: list[str], approval: dict[str, Any]
) -> dict[str, Any]:
    """The ``edits`` of an approve command from the submitted form (every field of the form
    goes along; what did not change is no change to the command service)."""
    found: dict[str, Any] = {}
    ceiling = (form.get("max_credits") or "").strip()
    if ceiling:
        found["max_credits"] = _number(ceiling, "max_credits")
    if form.get("has_rows"):
        found["scope"] = {"row_ids": checked_rows}
    schema_fields = fields(approval.get("payload_schema"), _payload(approval))
    if schema_fields is not None:
        found["proposed_payload"] = _from_fields(form, schema_fields, _payload(approval))
    elif "payload_json" in form:
        try:
            found["proposed_payload"] = json.loads(form["payload_json"])
        except ValueError as error:
            raise FormError(f"the payload is not JSON: {error}") from None
    return found


def _payload(approval: dict[str, Any]) -> Any:
    """The version being decided: the one proposed under a quorum, or the request's own."""
    if approval.get("approved_digest"):
        return approval.get("approved_payload")
    return approval.get("proposed_payload")


def _from_fields(form: dict[str, Any], found: list[Field], payload: Any) -> dict[str, Any]:
    result = dict(payload or {})  # properties the schema does not describe are kept
    for field in found:
        raw = form.get(f"payload.{field.name}")
        if field.kind == "boolean":
            if raw is not None or field.required or field.name in result:
                result[field.name] = raw is not None
            continue
        if raw is None or (raw == "" and not field.required):
            result.pop(field.name, None)
            continue
        result[field.name] = _typed(field, raw)
    return result


def _typed(field: Field, raw: str) -> Any:
    if field.kind == "enum":
        options = field.schema.get("enum") or []
        if not raw.isdigit() or int(raw) >= len(options):
            raise FormError(f"{field.name}: not one of the choices")
        return options[int(raw)]
    if field.kind in ("number", "integer"):
        return _number(raw, field.name)
    if field.kind == "json":
        try:
            return json.loads(raw)
        except ValueError as error:
            raise FormError(f"{field.name} is not JSON: {error}") from None
    return raw


def _number(raw: str, name: str) -> int | float:
    try:
        value = float(raw)
    except ValueError:
        raise FormError(f"{name} is not a number") from None
    return int(value) if value.is_integer() else value  # 3, not 3.0: the digest tells them apart
