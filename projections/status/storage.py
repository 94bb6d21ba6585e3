"""Open the configured status view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.utils import Environment

from approvals.projections.status.postgres import PostgresStatusView
from approvals.projections.status.sqlite import SQLiteStatusView, view_factory
from approvals.services.approvals.store import SerialisedPostgresFactory, postgres_env

if TYPE_CHECKING:
    from pathlib import Path

    from approvals.projections.status.view import StatusView
    from approvals.services.runtime.settings import Settings


def open_view(settings: Settings, sqlite_path: Path | None = None) -> StatusView:
    """The view in the store's backend: its own SQLite file, or the PostgreSQL database."""
    if settings.store == "sqlite":
        path = sqlite_path or settings.view_sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return view_factory(path).tracking_recorder(SQLiteStatusView)  # type: ignore[return-value]
    assert settings.postgres_dsn is not None
    schema = settings.view_postgres_schema or settings.postgres_schema
    # Named "status", the factory calls the position table status_tracking.
    pg = SerialisedPostgresFactory(
        Environment("status", postgres_env(settings.postgres_dsn, schema))
    )
    return pg.tracking_recorder(PostgresStatusView)
