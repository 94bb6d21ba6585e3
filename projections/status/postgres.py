"""The status view in PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg.sql import SQL

from approvals.projections.status.view import ADDED_COLUMNS, UPSTREAM, StatusView, create_statements

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractContextManager


class PostgresStatusView(PostgresTrackingRecorder, StatusView):
    placeholder = "%s"

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = f'"{self.datastore.schema}"'
        self.approvals_table = f"{schema}.status_approvals"
        self.timeline_table = f"{schema}.status_timeline"
        for statement in create_statements(
            self.approvals_table, self.timeline_table, "DOUBLE PRECISION"
        ):
            self.sql_create_statements.append(SQL(statement))  # type: ignore[arg-type]
        # A table made by an earlier release lacks the columns added since: add them.
        for column, definition in ADDED_COLUMNS.items():
            self.sql_create_statements.append(
                SQL(  # type: ignore[arg-type]
                    f"ALTER TABLE {self.approvals_table} "
                    f"ADD COLUMN IF NOT EXISTS {column} {definition}"
                )
            )

    def create_table(self) -> None:
        with self._transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'status_approvals'",
                [self.datastore.schema],
            )
            present = {row["column_name"] for row in cursor.fetchall()}
        super().create_table()
        if present and not present.issuperset(ADDED_COLUMNS):
            # The statements above added the missing columns: fill them in from the events.
            with self._transaction(commit=True) as cursor:
                self._refold(cursor)

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # One statement on an autocommit connection is its own transaction, as consistent as
        # in an explicit one: no BEGIN and ROLLBACK round trips around every query.
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            return list(cursor.fetchall())

    def _position(self, cursor: Any) -> int:
        return self._max_tracking_id(UPSTREAM, cursor) or 0

    def _record_position(self, cursor: Any, notification_id: int) -> None:
        self._insert_tracking(cursor, Tracking(UPSTREAM, notification_id))
