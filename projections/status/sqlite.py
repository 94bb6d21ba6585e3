"""The status view in SQLite (the default)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
    SQLiteTrackingRecorder,
)

from approvals.projections.status.bulk import BulkWriter
from approvals.projections.status.view import ADDED_COLUMNS, UPSTREAM, StatusView, create_statements

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class SQLiteStatusView(SQLiteTrackingRecorder, StatusView):
    """Commits with ``synchronous=NORMAL`` (WAL): a commit is visible at once and survives the
    process's crash; ``sync`` then fsyncs the write-ahead log, which makes it survive a power
    loss as ``synchronous=FULL`` would have at the commit (FULL's one fsync of the log, moved
    after the waiters are woken and kept before the acknowledgement)."""

    _directory_synced = False
    small_batch = 100  # its commit does not wait for the disk (sync does): cheap on the loop
    CHECKPOINT_BYTES = 4 << 20  # the log's size at which sync checkpoints it (not the commits)

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

    def bulk_writer(self) -> BulkWriter:
        # A worker's connection commits with synchronous=NORMAL too (view_factory), and its
        # batches are made durable by this view's sync before they are acknowledged.
        return BulkWriter(Path(self.datastore.pool.db_name))

    def sync(self) -> None:
        path = Path(self.datastore.pool.db_name)
        if not self._directory_synced:  # the log's directory entry, once
            _fsync(path.parent)
            self._directory_synced = True
        wal = path.with_name(path.name + "-wal")
        # No log: the last connection checkpointed it into the database (synced) and removed it.
        with contextlib.suppress(FileNotFoundError):
            _fsync(wal)
            if wal.stat().st_size >= self.CHECKPOINT_BYTES:
                # Here rather than in a commit (the connections' automatic checkpoint is off):
                # a checkpoint syncs the database file, which would stall the writer's loop.
                with contextlib.closing(sqlite3.connect(path)) as connection:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def _position(self, cursor: Any) -> int:
        return self._max_tracking_id(UPSTREAM, cursor) or 0

    def _record_position(self, cursor: Any, notification_id: int) -> None:
        self._insert_tracking(cursor, Tracking(UPSTREAM, notification_id))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NormalSyncSQLitePool(SQLiteConnectionPool):
    """The view's connections commit with ``synchronous=NORMAL``; ``SQLiteStatusView.sync``
    makes each batch durable before it is acknowledged."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL;")
        cursor.execute("PRAGMA wal_autocheckpoint=0;")  # SQLiteStatusView.sync checkpoints
        # A log checkpointed and started again is cut back to this (it never shrinks otherwise,
        # and sync goes by its size).
        cursor.execute("PRAGMA journal_size_limit=1048576;")
        return connection


def view_factory(path: Path) -> SQLiteFactory:
    factory = SQLiteFactory({"SQLITE_DBNAME": str(path), "SQLITE_LOCK_TIMEOUT": "10"})
    default_pool = factory.datastore.pool
    factory.datastore.pool = NormalSyncSQLitePool(
        db_name=default_pool.db_name, lock_timeout=default_pool.lock_timeout
    )
    default_pool.close()
    return factory
