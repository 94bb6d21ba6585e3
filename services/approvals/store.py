"""Event store infrastructure: the msgspec mapper and the SQLite / PostgreSQL configuration."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.postgres import PostgresFactory
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory
from eventsourcing.utils import get_topic

from approvals.schemas.codec import encoder, event_decoder

if TYPE_CHECKING:
    from collections.abc import Iterator

    from eventsourcing.domain import DomainEventProtocol
    from eventsourcing.persistence import ApplicationRecorder
    from eventsourcing.postgres import TPostgresTrackingRecorder
    from eventsourcing.utils import Environment, EnvType
    from psycopg import Connection

    from approvals.services.runtime.settings import Settings


ROOT = "approvals."


def stored_topic(cls: type) -> str:
    """The topic an event class is stored under: its module path without the import root, so
    the stored topics did not change when the folders were installed under ``approvals``
    (``schemas.events:Approved`` then and now). Reading never resolves a topic: the state is the
    tagged JSON the bus carries, decoded by its ``type``."""
    return get_topic(cls).removeprefix(ROOT)


class MsgspecMapper(Mapper[Any]):
    """Stores each event as the JSON the bus carries, so the relay publishes the bytes as they are.

    No compressor or cipher: the stored state is the public message.
    """

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=stored_topic(type(domain_event)),
            state=encoder.encode(domain_event),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        event: DomainEventProtocol[Any] = event_decoder.decode(stored_event.state)
        return event


class FullSyncSQLitePool(SQLiteConnectionPool):
    """Connections commit with ``synchronous=FULL``: an acknowledged write survives power loss."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection.cursor().execute("PRAGMA synchronous=FULL;")
        return connection


class FullSyncSQLiteFactory(SQLiteFactory):
    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        default_pool = self.datastore.pool
        self.datastore.pool = FullSyncSQLitePool(
            db_name=default_pool.db_name, lock_timeout=default_pool.lock_timeout
        )
        default_pool.close()


# Every process that creates schemas or tables takes this session lock first: instances started
# together (a Deployment's replicas) otherwise race in PostgreSQL's CREATE ... IF NOT EXISTS and
# one fails with "tuple concurrently updated" or a duplicate key in the catalogue.
CREATE_LOCK = 0x4150_5052_4F56_4C53  # "APPROVLS"


@contextlib.contextmanager
def creating(conn: Connection[Any]) -> Iterator[None]:
    """Hold the creation lock on ``conn`` (a session lock: released here, whatever happens)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_LOCK,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_LOCK,))


class SerialisedPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, creating its tables under the creation lock."""

    def application_recorder(self) -> ApplicationRecorder:
        with self._creating():
            return super().application_recorder()

    def tracking_recorder(
        self, tracking_recorder_class: type[TPostgresTrackingRecorder] | None = None
    ) -> TPostgresTrackingRecorder:
        with self._creating():
            return super().tracking_recorder(tracking_recorder_class)

    @contextlib.contextmanager
    def _creating(self) -> Iterator[None]:
        if not self.env_create_table():
            yield
            return
        with self.datastore.get_connection() as conn, creating(conn):
            yield


def store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for the configured store."""
    if settings.store == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": get_topic(FullSyncSQLiteFactory),
            "SQLITE_DBNAME": str(settings.sqlite_path),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if not settings.postgres_dsn:
        raise ValueError("APPROVALS_STORE=postgres needs APPROVALS_POSTGRES_DSN")
    return postgres_env(settings.postgres_dsn, settings.postgres_schema)


def postgres_env(dsn: str, schema: str | None = None) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    env = {
        "PERSISTENCE_MODULE": get_topic(SerialisedPostgresFactory),
        "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
    }
    if schema:
        _create_schema(dsn, schema)
        env["POSTGRES_SCHEMA"] = schema
    return env


def _create_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn, creating(conn):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
