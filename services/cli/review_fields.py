"""What a reviewer checks before approving live work (seed 1's "What to review"), as the web
detail page shows it: scope, provider or integration, mode, credit ceiling, preview, destination,
and the proposed payload, read from the request as it was recorded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from approvals.schemas.events import SpendPicture
    from approvals.schemas.queries import TimelineEntry
    from approvals.schemas.replies import BudgetState


def requested_event(timeline: Sequence[TimelineEntry]) -> Mapping[str, Any]:
    """The ``requested`` event of a timeline (its first), as recorded."""
    return next((e.event for e in timeline if e.type == "requested"), {})


def what_to_review(requested: Mapping[str, Any]) -> dict[str, Any]:
    """The review fields of a recorded request (the same for ``show`` and ``reviews next``)."""
    action: Mapping[str, Any] = requested.get("action") or {}
    return {
        "scope": action.get("scope") or {},
        "kind": action.get("kind"),
        "provider": action.get("provider"),
        "mode": action.get("mode"),
        "max_credits": action.get("max_credits"),
        "expected_credits": action.get("expected_credits"),
        "preview": action.get("preview"),
        "destination": action.get("destination"),
        "touches": action.get("touches"),
        "proposed_payload": requested.get("proposed_payload"),
    }


def review_rows(
    what: Mapping[str, Any],
    digest: str,
    spend: SpendPicture | None = None,
    budget_now: BudgetState | None = None,
) -> list[tuple[str, str]]:
    """Rows for people, in the order of the web page; values may span several lines."""
    rows = [
        ("scope", _scope(what["scope"])),
        ("provider", " · ".join(filter(None, [(what["kind"] or "").replace("_", " "),
                                              what["provider"]]))),
        ("mode", what["mode"] or ""),
        ("credit ceiling", _ceiling(what)),
    ]  # fmt: skip
    if spend is not None and spend.cap is not None:
        fits = "" if spend.fits else " (did not fit then)"
        rows.append(("budget at request", f"{spend.committed or 0:g} of {spend.cap:g} committed "
                     f"in {spend.period}, {spend.remaining or 0:g} remained{fits}"))  # fmt: skip
    if budget_now is not None:
        ceiling = what["max_credits"]
        fits = "" if ceiling is None or ceiling <= budget_now.remaining else " (does not fit now)"
        rows.append(("budget now", f"{budget_now.committed:g} of {budget_now.cap:g} committed "
                     f"in {budget_now.period}, {budget_now.remaining:g} remain{fits}"))  # fmt: skip
    if what["touches"] is not None:
        rows.append(("touches", ", ".join(what["touches"]) or "nothing"))
    rows += [
        ("preview", "none given" if what["preview"] is None else _pretty(what["preview"])),
        ("destination", what["destination"] or "—"),
        ("proposed payload", _pretty(what["proposed_payload"])),
        ("digest", digest),
    ]
    return rows


def block(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """A titled block of rows, values aligned, continuation lines indented under the value."""
    width = max(len(key) for key, _ in rows)
    lines = [title]
    for key, value in rows:
        first, *rest = value.splitlines() or [""]
        lines.append(f"  {key.ljust(width)}  {first}")
        lines.extend(f"  {' ' * width}  {line}" for line in rest)
    return "\n".join(lines)


def _scope(scope: Mapping[str, Any]) -> str:
    parts = [f"{name} {scope[name]}" for name in ("table", "column", "workflow") if scope.get(name)]
    if scope.get("row_count") is not None:
        parts.append(f"{scope['row_count']} rows")
    lines = [" · ".join(parts)] if parts else []
    if scope.get("row_ids"):
        lines.append(f"rows {', '.join(scope['row_ids'])}")
    if scope.get("filters"):
        lines.append(f"filters {_pretty(scope['filters'])}")
    return "\n".join(lines) or "none given"


def _ceiling(what: Mapping[str, Any]) -> str:
    text = "none" if what["max_credits"] is None else f"{what['max_credits']:g} credits"
    if what["expected_credits"] is not None:
        text += f" · expected {what['expected_credits']:g}"
    return text


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
