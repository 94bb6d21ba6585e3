"""Server fixtures: a real nats-server per test, SQLite in a temporary folder, and PostgreSQL
from APPROVALS_TEST_POSTGRES_DSN (skipped with a printed reason when unset, failed in CI)."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest

from approvals.services.approvals.store import postgres_env, store_env
from approvals.services.runtime.natsserver import NatsServer
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

POSTGRES_DSN = os.environ.get("APPROVALS_TEST_POSTGRES_DSN")
# `approvals serve` processes the tests start bind no fixed ops port (two may run at once);
# tests/integration/test_ops.py gives its process a free one.
os.environ.setdefault("APPROVALS_OPS_PORT", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if POSTGRES_DSN:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(
            "CI is set but APPROVALS_TEST_POSTGRES_DSN is not: PostgreSQL tests would be skipped"
        )
    skip = pytest.mark.skip(reason="APPROVALS_TEST_POSTGRES_DSN is not set: PostgreSQL skipped")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on a free port and its own store directory."""
    with NatsServer(tmp_path / "jetstream") as server:
        yield server


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    import psycopg
    from psycopg import sql

    assert POSTGRES_DSN is not None
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        # The schema and any a test made beside it (e.g. <schema>_rebuilt).
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}%",)
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for one store backend; every test that takes it runs against both."""
    if request.param == "sqlite":
        return Settings(
            store="sqlite",
            sqlite_path=tmp_path / "approvals.db",
            view_sqlite_path=tmp_path / "status.db",
        )
    schema = request.getfixturevalue("postgres_schema")
    return Settings(store="postgres", postgres_dsn=POSTGRES_DSN, postgres_schema=schema)


@pytest.fixture
def store_environment(settings: Settings) -> dict[str, str]:
    return store_env(settings)


__all__ = ["POSTGRES_DSN", "postgres_env"]
