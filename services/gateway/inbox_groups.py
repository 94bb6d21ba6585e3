"""Near-identical pending requests shown as one row of the web inbox.

The same requester asking for the same kind of action on the same provider and destination is,
to the person reading the inbox, one question asked several times: listing each as its own row
is how prompt fatigue starts. They are shown as one group row with a count, which opens onto the
items; each item keeps its own page, digest and decision (a group is only how they are shown).
"""

from __future__ import annotations

from typing import Any, NamedTuple

Item = dict[str, Any]  # an approval as the list query returns it


class Row(NamedTuple):
    """One row of the inbox: a single approval, or a group of near-identical pending ones."""

    items: list[Item]

    @property
    def first(self) -> Item:
        return self.items[0]

    @property
    def is_group(self) -> bool:
        return len(self.items) > 1


def similarity(item: Item) -> tuple[Any, ...] | None:
    """What makes two requests near-identical; None for one that is not pending (a decided
    request is history, each shown as it was decided)."""
    if item.get("status") != "pending":
        return None
    fields = ("requested_by", "action_kind", "provider", "destination")
    return tuple(item.get(field) for field in fields)


def rows(items: list[Item]) -> list[Row]:
    """``items`` as inbox rows, in their order: each group where its first item stood."""
    out: list[Row] = []
    groups: dict[tuple[Any, ...], Row] = {}
    for item in items:
        key = similarity(item)
        if key is None:
            out.append(Row([item]))
        elif key in groups:
            groups[key].items.append(item)
        else:
            groups[key] = row = Row([item])
            out.append(row)
    return out
