"""The approve form's "grant similar requests for … hours" fields, as the ``grant`` of an
``approve`` command."""

from __future__ import annotations

from typing import Any


def grant_terms(data: dict[str, str]) -> dict[str, Any] | None:
    """The grant (``grant_hours``, ``grant_max_credits``, ``grant_runs``), or None when the box
    ``grant`` is not ticked. Numbers are checked by the command service, which names a bad one."""
    if data.get("grant") != "on":
        return None
    terms: dict[str, Any] = {"hours": _number(data.get("grant_hours") or "1")}
    if data.get("grant_max_credits"):
        terms["max_credits"] = _number(data["grant_max_credits"])
    if data.get("grant_runs"):
        terms["runs"] = _number(data["grant_runs"])
    return terms


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text  # refused by the command service, with the field named
    return int(value) if value.is_integer() else value
