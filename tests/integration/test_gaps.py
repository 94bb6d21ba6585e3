"""A PostgreSQL store whose notification ids have gaps, as with several command instances: an
insert that loses a race is rolled back, and the id it drew from the sequence is never used.
Nothing may take the ids for a count: the relay, the view's lag, verify and replay."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

import pytest
from eventsourcing.persistence import IntegrityError
from prometheus_client import REGISTRY

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService, view_lease
from approvals.schemas.subjects import STREAM
from approvals.services.approvals.service import CommandService
from approvals.services.runtime.bus import ensure_kv
from approvals.services.runtime.lease import BUCKET as LEASES
from approvals.services.runtime.settings import Settings
from tests.conftest import POSTGRES_DSN
from tests.helpers import eventually
from tests.integration.test_audit import APPROVALS
from tests.integration.test_permissions import request_body
from tests.workspaces import configure_over_nats

if TYPE_CHECKING:
    from approvals.services.approvals.application import Approvals
    from approvals.services.runtime.natsserver import NatsServer

pytestmark = pytest.mark.postgres


def lose_a_race(app: Approvals) -> None:
    """A second instance's save of an event that is already stored: refused, rolled back."""
    [first] = app.recorder.select_notifications(start=1, limit=1)
    [stored] = app.recorder.select_events(first.originator_id, lte=first.originator_version,
                                          gt=first.originator_version - 1)  # fmt: skip
    with pytest.raises(IntegrityError):
        app.recorder.insert_events([stored])


def stored(app: Approvals) -> list[int]:
    return [n.id for n in app.recorder.select_notifications(start=1, limit=100_000)]


async def cli(settings: Settings, *args: str) -> tuple[int, Any]:
    env = {**os.environ, "NATS_URL": settings.nats_url, "APPROVALS_STORE": "postgres",
           "APPROVALS_POSTGRES_DSN": str(settings.postgres_dsn),
           "APPROVALS_POSTGRES_SCHEMA": str(settings.postgres_schema)}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        APPROVALS, "--json", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, (out + err)[-3000:]
    return process.returncode, json.loads(out)


async def test_ids_with_gaps_are_positions_not_counts(
    postgres_schema: str, nats_server: NatsServer
) -> None:
    settings = Settings(store="postgres", postgres_dsn=POSTGRES_DSN,
                        postgres_schema=postgres_schema, nats_url=nats_server.url,
                        checkpoint_interval_s=0.5)  # fmt: skip
    async with CommandService(settings) as commands:
        assert commands.app is not None
        app = commands.app
        client = await ApprovalsClient.connect(settings.nats_url, "acme", reply_timeout=10.0)
        js = client.nc.jetstream()
        projection = ProjectionService(settings)
        await projection.start()
        try:
            await configure_over_nats(client.nc)
            assert (await client.send("request", request_body("before the gap"))).ok
            # Check: a lost race leaves an id unused; the next request is stored after it.
            lose_a_race(app)
            assert (await client.send("request", request_body("after the gap"))).ok
            ids = stored(app)
            assert app.last_notification_id() == ids[-1] > len(ids)
            # Check: the relay puts every stored event on the stream, and no more.
            await eventually(lambda: _last_seq(js, len(ids)))
            assert await commands.ready()
            assert REGISTRY.get_sample_value("approvals_relay_lag_events") == 0
            # Check: the view applied them all, and its lag says so.
            await eventually(lambda: projection.view is not None
                             and projection.view.position() == ids[-1])  # fmt: skip
            assert await projection.ready()
            assert _projection_lag() == 0

            # Another instance holds the view now, and is gone: the view stays behind by one.
            await projection.stop()
            leases = await ensure_kv(js, LEASES)
            await leases.create(view_lease(settings), b"another instance")
            projection = ProjectionService(settings)
            await projection.start()
            assert (await client.send("request", request_body("not projected"))).ok
            await eventually(lambda: _last_seq(js, len(ids) + 1))
            # Check: one event behind is a lag, though the stream's sequence equals the
            # view's position (the gap).
            assert await projection.ready()
            assert _projection_lag() == 1
        finally:
            await projection.stop()
            await client.close()
        ids = stored(app)

        # Check: verify and replay read the gapped log whole, every event counted once.
        await eventually(lambda: _sealed(commands, ids[-1]))
        _, verified = await cli(settings, "audit", "verify")
        assert verified["ok"] is True, verified
        assert (verified["events"], verified["position"]) == (len(ids), ids[-1])
        gap = next(i for i in range(1, ids[-1]) if i not in ids)
        _, replayed = await cli(settings, "audit", "replay", "--position", str(gap))
        assert replayed["position"] == gap - 1
        assert replayed["events"] == len([i for i in ids if i < gap])


def _projection_lag() -> float:
    return REGISTRY.get_sample_value("approvals_projection_lag_events") or 0.0


async def _last_seq(js: Any, count: int) -> bool:
    return bool((await js.stream_info(STREAM)).state.last_seq == count)


def _sealed(commands: CommandService, head: int) -> bool:
    checkpointer = commands.checkpointer
    return checkpointer is not None and checkpointer.sealed.position >= head
