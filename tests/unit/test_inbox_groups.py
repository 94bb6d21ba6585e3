"""Near-identical pending requests as one inbox row: the pure grouping rule."""

from __future__ import annotations

from typing import Any

from approvals.services.gateway.inbox_groups import rows


def item(n: int, status: str = "pending", **changes: Any) -> dict[str, Any]:
    return {"id": str(n), "status": status, "requested_by": "service:agent",
            "action_kind": "crm_write", "provider": None, "destination": "hubspot:list/1",
            **changes}  # fmt: skip


def test_same_requester_kind_provider_and_destination_is_one_row_where_the_first_stood() -> None:
    items = [
        item(1), item(2, destination="hubspot:list/2"), item(3), item(4, requested_by="service:b"),
        item(5, action_kind="provider_call"), item(6, provider="clearbit"), item(7),
    ]  # fmt: skip
    shown = [[i["id"] for i in row.items] for row in rows(items)]
    assert shown == [["1", "3", "7"], ["2"], ["4"], ["5"], ["6"]]
    assert [row.is_group for row in rows(items)] == [True, False, False, False, False]


def test_decided_requests_are_never_grouped() -> None:
    items = [item(1, "approved"), item(2, "approved"), item(3), item(4, "rejected")]
    assert [[i["id"] for i in row.items] for row in rows(items)] == [["1"], ["2"], ["3"], ["4"]]
