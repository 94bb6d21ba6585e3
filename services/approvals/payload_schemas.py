"""A requester's ``payload_schema`` (JSON Schema) and payloads checked against it.

Validated with ``jsonschema`` (the maintained implementation), in the dialect the schema names
(``$schema``; Draft 2020-12 when it names none). Only local references resolve: the library's
default registry retrieves nothing over the network, so a schema cannot make the service fetch.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema import validators

from approvals.schemas.codec import encoder
from approvals.services.approvals.errors import Invalid, TooLarge

MAX_SCHEMA_BYTES = 16 * 1024  # a form's description, not a document store


def require_schema(schema: dict[str, Any]) -> None:
    """Invalid unless ``schema`` is a JSON Schema; TooLarge over MAX_SCHEMA_BYTES."""
    size = len(encoder.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise TooLarge(f"payload_schema is {size} bytes; the most is {MAX_SCHEMA_BYTES}",
                       field="payload_schema", limit=MAX_SCHEMA_BYTES)  # fmt: skip
    cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" (at /{where})" if where else ""
        raise Invalid(f"payload_schema is not a valid JSON Schema: {error.message}{at}",
                      field="payload_schema") from None  # fmt: skip


def require_valid(schema: dict[str, Any], payload: Any, field: str) -> None:
    """Invalid, naming the first failing path, unless ``payload`` is valid against ``schema``."""
    cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(payload))
    if error is None:
        return
    path = "/" + "/".join(str(p) for p in error.absolute_path)
    raise Invalid(
        f"{field} does not match payload_schema at {path}: {error.message}",
        field=field,
        path=path,
    )
