"""Approve with edits: the narrower version an approver may approve instead of the request.

Pure rules. An edit may lower ``max_credits``, keep a subset of ``scope.row_ids`` (with its
``row_count``), narrow ``scope.filters`` and replace ``proposed_payload`` (valid against the
request's ``payload_schema``, when it has one); it may never change the kind, mode, provider,
destination, table, column or workflow, and never widen. "Narrower filters" means, precisely:
the edited filters hold every key of the original filters with the same value, and may add
keys (they only add constraints). Anything else is ``invalid`` naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from approvals.schemas.codec import canonical_encoder
from approvals.schemas.digest import action_digest
from approvals.schemas.events import FieldChange
from approvals.services.approvals import payload_schemas
from approvals.services.approvals.errors import Invalid

if TYPE_CHECKING:
    from approvals.schemas.commands import Action, Edits, Scope
    from approvals.schemas.events import Requested

FIXED_ACTION_FIELDS = ("kind", "mode", "provider", "destination")
FIXED_SCOPE_FIELDS = ("table", "column", "workflow")


class Version(NamedTuple):
    """One version of what would run: the requested one or an approver's edit of it."""

    action: Action
    proposed_payload: Any
    digest: str
    changes: tuple[FieldChange, ...] = ()


def requested_version(request: Requested) -> Version:
    return Version(request.action, request.proposed_payload, request.digest)


def edited_version(request: Requested, edits: Edits) -> Version:
    """The version ``edits`` make of the request, or Invalid naming the field that would widen
    or move what was asked. Edits are always made from the request itself, never from another
    approver's proposal, so every version stays within the request's bounds."""
    action = request.action
    for name in FIXED_ACTION_FIELDS:
        given = getattr(edits, name)
        if given is not None and given != getattr(action, name):
            raise _refused(name, f"the {name} of an action cannot be edited")
    scope = _edited_scope(action.scope, edits.scope) if edits.scope is not None else action.scope
    ceiling = action.max_credits
    if edits.max_credits is not None:
        if ceiling is not None and edits.max_credits > ceiling:
            raise _refused("max_credits", f"max_credits may only be lowered (at most {ceiling})")
        ceiling = edits.max_credits
    edited = msgspec.structs.replace(action, scope=scope, max_credits=ceiling)
    payload = request.proposed_payload
    if edits.proposed_payload is not msgspec.UNSET:
        payload = edits.proposed_payload
        if request.payload_schema is not None:
            payload_schemas.require_valid(request.payload_schema, payload, "proposed_payload")
    digest = action_digest(edited, payload)
    return Version(edited, payload, digest, diff(request, edited, payload))


def _edited_scope(scope: Scope, edits: Scope) -> Scope:
    for name in FIXED_SCOPE_FIELDS:
        given = getattr(edits, name)
        if given is not None and given != getattr(scope, name):
            raise _refused(f"scope.{name}", f"the scope's {name} cannot be edited")
    row_ids, row_count = scope.row_ids, scope.row_count
    if edits.row_ids is not None:
        if scope.row_ids is None:
            raise _refused("scope.row_ids", "the request names no rows to choose a subset from")
        outside = sorted(set(edits.row_ids) - set(scope.row_ids))
        if outside:
            raise _refused("scope.row_ids", "rows outside the request's scope", outside=outside)
        row_ids = tuple(dict.fromkeys(edits.row_ids))  # a subset, in the edit's order, once each
        row_count = len(row_ids)
        if edits.row_count is not None and edits.row_count != row_count:
            raise _refused("scope.row_count", f"row_count must be {row_count}: the rows kept")
    elif edits.row_count is not None:
        if scope.row_count is None or edits.row_count > scope.row_count:
            raise _refused("scope.row_count", "row_count may only be lowered")
        row_count = edits.row_count
    filters = scope.filters
    if edits.filters is not None:
        kept = scope.filters or {}
        dropped = sorted(
            k
            for k, v in kept.items()
            if k not in edits.filters or _json(edits.filters[k]) != _json(v)
        )
        if dropped:
            raise _refused("scope.filters", "filters may only add constraints", changed=dropped)
        filters = edits.filters
    return msgspec.structs.replace(scope, row_ids=row_ids, row_count=row_count, filters=filters)


def diff(request: Requested, action: Action, payload: Any) -> tuple[FieldChange, ...]:
    """The changes from the request to (``action``, ``payload``): one per changed leaf field of
    the action's scope and ceiling, and per changed top-level key of an object payload."""
    before = msgspec.json.decode(canonical_encoder.encode(request.action))  # as stored: JSON
    after = msgspec.json.decode(canonical_encoder.encode(action))
    changes = [
        FieldChange(path=f"/scope/{k}", before=before["scope"].get(k), after=after["scope"].get(k))
        for k in sorted(set(before["scope"]) | set(after["scope"]))
        if _json(before["scope"].get(k)) != _json(after["scope"].get(k))
    ]
    if _json(before.get("max_credits")) != _json(after.get("max_credits")):
        changes.append(FieldChange(path="/max_credits", before=before.get("max_credits"),
                                   after=after.get("max_credits")))  # fmt: skip
    old, new = request.proposed_payload, payload
    if isinstance(old, dict) and isinstance(new, dict):
        changes += [
            FieldChange(
                path=f"/proposed_payload/{_pointer(k)}", before=old.get(k), after=new.get(k)
            )
            for k in sorted(set(old) | set(new))
            if _json(old.get(k)) != _json(new.get(k))
        ]
    elif _json(old) != _json(new):
        changes.append(FieldChange(path="/proposed_payload", before=old, after=new))
    return tuple(changes)


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")  # RFC 6901


def _json(value: Any) -> bytes:
    return canonical_encoder.encode(value)


def _refused(field: str, message: str, **details: Any) -> Invalid:
    return Invalid(f"edits.{field}: {message}", field=f"edits.{field}", **details)
