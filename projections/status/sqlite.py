"""The status view in SQLite (the default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteTrackingRecorder

from approvals.projections.status.view import ADDED_COLUMNS, UPSTREAM, StatusView, create_statements

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class SQLiteStatusView(SQLiteTrackingRecorder, StatusView):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *create_statements(self.approvals_table, self.timeline_table, "REAL"),
        ]

    def create_table(self) -> None:
        super().create_table()
        # A table made by an earlier release lacks the columns added since: add them.
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"PRAGMA table_info({self.approvals_table})")
            present = {row[1] for row in cursor.fetchall()}
            added = {c: kind for c, kind in ADDED_COLUMNS.items() if c not in present}
            for column, definition in added.items():
                cursor.execute(
                    f"ALTER TABLE {self.approvals_table} ADD COLUMN {column} {definition}"
                )
            if added:
                # Fill them in from the events, not with their defaults.
                self._refold(cursor)

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def _position(self, cursor: Any) -> int:
        return self._max_tracking_id(UPSTREAM, cursor) or 0

    def _record_position(self, cursor: Any, notification_id: int) -> None:
        self._insert_tracking(cursor, Tracking(UPSTREAM, notification_id))
