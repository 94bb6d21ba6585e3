"""The projection under faults: a batch that fails half-way, a killed projector, a duplicate."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest
from eventsourcing.sqlite import SQLiteFactory

from approvals.projections.status import rebuild
from approvals.projections.status.projector import DURABLE, Projector
from approvals.projections.status.sqlite import SQLiteStatusView, view_factory
from approvals.projections.status.storage import open_view
from approvals.schemas import commands
from approvals.schemas.subjects import NOTIFICATION_ID_HEADER, STREAM
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.relay import Relay
from approvals.services.approvals.store import store_env
from approvals.services.runtime.settings import Settings
from tests.workspaces import configure

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from approvals.services.runtime.natsserver import NatsServer


def a_request(i: int) -> commands.Request:
    return commands.Request(
        requested_by="service:enricher",
        skill_name="crm-sync",
        skill_execution_id=f"exec-{i}",
        title=f"request {i}",
        summary="",
        risk_level="medium",
        action=commands.Action(kind="crm_write", mode="live"),
    )


def write_history(app: Approvals, approvals: int) -> int:
    """Requests, half of them approved: the store's last notification id."""
    configure(app, "acme")
    for start in range(0, approvals, 500):
        batch = range(start, min(start + 500, approvals))
        handled = app.handle_batch([("acme", a_request(i)) for i in batch])
        decisions = [
            ("acme", commands.Approve(approval_id=r.approval.id, approver="user:ana",
                                      digest=r.approval.request.digest))
            for r in handled.results[::2]
            if not isinstance(r, Exception) and r.approval is not None
        ]  # fmt: skip
        app.handle_batch(decisions)
    return app.last_notification_id()


async def publish_all(app: Approvals, nc: Client) -> None:
    relay = Relay(app, nc)
    await relay.start()
    await relay.publish_pending()
    await relay.stop()


async def published(
    nats_server: NatsServer, tmp_path: Path, approvals: int
) -> tuple[Approvals, int, Client]:
    """A store of ``approvals`` requests (half approved), all of it on the stream: the store,
    its last notification id and a connection."""
    app = Approvals(store_env(Settings(sqlite_path=tmp_path / "approvals.db")))
    last = write_history(app, approvals)
    nc = await nats.connect(nats_server.url)
    await publish_all(app, nc)
    return app, last, nc


async def eventually(check: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def rebuilt_hash(app: Approvals, path: Path) -> str:
    view = open_view(Settings(), sqlite_path=path)
    rebuild.from_store(app, view)
    return view.content_hash()


class FailsOnce(SQLiteStatusView):
    """Fails the first batch after writing its rows, before the transaction commits."""

    failed = False

    def _record_position(self, cursor: Any, notification_id: int) -> None:
        if not FailsOnce.failed:
            FailsOnce.failed = True
            raise RuntimeError("crash in the middle of a batch")
        super()._record_position(cursor, notification_id)


async def test_a_batch_that_fails_half_way_is_redone_whole(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    app, last, nc = await published(nats_server, tmp_path, 1000)
    factory = SQLiteFactory({"SQLITE_DBNAME": str(tmp_path / "status.db")})
    view = factory.tracking_recorder(FailsOnce)
    assert isinstance(view, FailsOnce)
    # Check the failed batch left nothing behind and was written again.
    projector = Projector(view, nc, batch_size=400, ack_wait_s=2.0)
    await projector.start()
    try:
        await eventually(lambda: view.position() == last)
    finally:
        await projector.stop()
        await nc.close()
    assert FailsOnce.failed
    assert view.count("acme") == {"approved": 500, "pending": 500}
    assert view.content_hash() == rebuilt_hash(app, tmp_path / "rebuilt.db")


async def test_the_same_event_delivered_twice_changes_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    _, last, nc = await published(nats_server, tmp_path, 10)
    js = nc.jetstream()
    view = open_view(Settings(), sqlite_path=tmp_path / "status.db")
    projector = Projector(view, nc)
    await projector.start()
    try:
        await eventually(lambda: view.position() == last)
        before = view.content_hash()
        # Check a second copy of an already projected event (a redelivery, a republish).
        copy = await js.get_msg(STREAM, seq=3)
        headers = dict(copy.headers or {})
        headers["Nats-Msg-Id"] = "a-second-copy"  # so that the stream stores it again
        del headers["Nats-Expected-Last-Sequence"]
        ack = await js.publish(copy.subject or "", copy.data or b"", headers=headers)
        await eventually_consumed(js, ack.seq)
        assert view.content_hash() == before
        assert view.position() == last
    finally:
        await projector.stop()
        await nc.close()


def projector_of(view: SQLiteStatusView, nc: Client, in_worker: bool, **options: Any) -> Projector:
    """A projector writing on its loop and in a thread, or (``in_worker``) every batch, however
    small, in its worker process."""
    if not in_worker:
        return Projector(view, nc, **options)
    view.small_batch = 0
    return Projector(view, nc, bulk=view.bulk_writer(), **options)


@pytest.mark.parametrize("in_worker", [False, True], ids=["loop", "worker"])
async def test_a_message_that_is_not_an_event_is_skipped_and_the_next_projected(
    nats_server: NatsServer, tmp_path: Path, in_worker: bool
) -> None:
    _, last, nc = await published(nats_server, tmp_path, 10)
    js = nc.jetstream()
    view = open_view(Settings(), sqlite_path=tmp_path / "status.db")
    assert isinstance(view, SQLiteStatusView)
    projector = projector_of(view, nc, in_worker)
    await projector.start()
    try:
        await eventually(lambda: view.position() == last)
        before = view.content_hash()
        # Check a message that does not decode (it is decoded on arrival, and again in the
        # write, which logs and skips it) does not stop the event behind it.
        copy = await js.get_msg(STREAM, seq=3)
        subject = copy.subject or ""
        for number, data in ((last + 1, b"not an event"), (last + 2, copy.data or b"")):
            headers = {NOTIFICATION_ID_HEADER: str(number), "Nats-Msg-Id": f"extra-{number}"}
            ack = await js.publish(subject, data, headers=headers)
        await eventually_consumed(js, ack.seq)
        assert view.position() == last + 2
        assert view.content_hash() == before  # the copy's version was projected already
    finally:
        await projector.stop()
        await nc.close()


class DurableOnSignal(SQLiteStatusView):
    """Its fsync waits until the test lets it finish."""

    durable = threading.Event()
    syncs = 0

    def sync(self) -> None:
        assert DurableOnSignal.durable.wait(30), "the test never let the fsync finish"
        DurableOnSignal.syncs += 1
        super().sync()


@pytest.mark.parametrize("in_worker", [False, True], ids=["loop", "worker"])
async def test_a_batch_is_visible_and_its_waiters_woken_before_its_fsync_and_acknowledged_after(
    nats_server: NatsServer, tmp_path: Path, in_worker: bool
) -> None:
    _, last, nc = await published(nats_server, tmp_path, 10)
    js = nc.jetstream()
    stream_last = (await js.stream_info(STREAM)).state.last_seq
    DurableOnSignal.durable.clear()  # set by an earlier run of this test
    view = view_factory(tmp_path / "status.db").tracking_recorder(DurableOnSignal)
    assert isinstance(view, DurableOnSignal)
    woken: list[int] = []
    projector = projector_of(
        view, nc, in_worker, on_change=lambda changed: woken.append(len(changed))
    )
    await projector.start()
    try:
        # Check: committed, readable and the waiters told, while the fsync has not finished.
        # (A worker's commit is readable a moment before its reply reaches the projector,
        # which then tells the waiters: a waiter reading in between finds the change.)
        await eventually(lambda: view.position() == last and sum(woken) == 10)
        info = await js.consumer_info(STREAM, DURABLE)
        assert info.ack_floor is None or info.ack_floor.stream_seq == 0
        assert info.num_ack_pending == stream_last
        # Check: once durable, everything is acknowledged.
        DurableOnSignal.durable.set()
        await eventually_consumed(js, stream_last)
        assert DurableOnSignal.syncs >= 1
    finally:
        DurableOnSignal.durable.set()
        await projector.stop()
        await nc.close()


async def test_a_killed_writer_process_is_replaced_and_its_batch_written_again(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    app, last, nc = await published(nats_server, tmp_path, 3000)
    view = open_view(Settings(), sqlite_path=tmp_path / "status.db")
    bulk = view.bulk_writer()
    assert bulk is not None
    projector = Projector(view, nc, bulk=bulk, batch_size=500)
    projector.retry_pause_s = 0.05
    await projector.start()
    try:
        # Check: SIGKILL the worker while it has a batch in hand (it has not finished the
        # first: nine batches of 500 events to go).
        await eventually(lambda: bulk._process is not None)
        assert bulk._process is not None
        first = bulk._process.pid
        os.kill(first, signal.SIGKILL)
        assert view.position() < last
        # Check: another worker writes the batch again and the rest; the view equals a rebuild.
        await eventually(lambda: view.position() == last)
        assert bulk._process is not None
        assert bulk._process.pid != first
    finally:
        await projector.stop()
        await nc.close()
    assert bulk._process is None  # stopped with the projector
    assert view.count("acme") == {"approved": 1500, "pending": 1500}
    assert view.content_hash() == rebuilt_hash(app, tmp_path / "rebuilt.db")


class NeverWrites(SQLiteStatusView):
    """A projector on this view receives and never acknowledges: a process that hangs, then dies."""

    def project(self, batch: Any) -> Any:
        raise RuntimeError("the database is gone")


async def test_a_restart_with_unacknowledged_messages_keeps_stream_order(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    app, _, nc = await published(nats_server, tmp_path, 100)
    factory = SQLiteFactory({"SQLITE_DBNAME": str(tmp_path / "status.db")})
    stuck = factory.tracking_recorder(NeverWrites)
    first = Projector(stuck, nc, ack_wait_s=2.0)
    first.retry_pause_s = 0.05
    await first.start()
    js = nc.jetstream()
    try:
        await eventually_pending(js, 150)
    finally:
        await first.stop()
    # More events after it died: the server pushes these to the next projector at once, and the
    # 150 the dead one held only when their ack_wait runs out.
    handled = app.handle_batch([("acme", a_request(i)) for i in range(100, 120)])
    assert len(handled.results) == 20
    await publish_all(app, nc)
    view = open_view(Settings(), sqlite_path=tmp_path / "status.db")
    second = Projector(view, nc, ack_wait_s=2.0)
    await second.start()
    try:
        await eventually(lambda: view.position() == app.last_notification_id())
    finally:
        await second.stop()
        await nc.close()
    assert view.count("acme") == {"approved": 50, "pending": 70}
    assert view.content_hash() == rebuilt_hash(app, tmp_path / "rebuilt.db")


async def eventually_pending(js: JetStreamContext, pending: int) -> None:
    deadline = time.monotonic() + 10
    while (await js.consumer_info(STREAM, DURABLE)).num_ack_pending < pending:
        assert time.monotonic() < deadline, "the consumer did not deliver"
        await asyncio.sleep(0.02)


async def eventually_consumed(js: JetStreamContext, seq: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        info = await js.consumer_info(STREAM, DURABLE)
        if info.ack_floor.stream_seq >= seq:
            return
        assert time.monotonic() < deadline, "the projector did not consume the copy"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_a_killed_projector_restarts_to_a_view_equal_to_a_rebuild(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    store = tmp_path / "approvals.db"
    app = Approvals(store_env(Settings(sqlite_path=store)))
    last = write_history(app, 20_000)
    nc = await nats.connect(nats_server.url)
    await publish_all(app, nc)
    await nc.close()
    view_path = tmp_path / "status.db"
    view = open_view(Settings(), sqlite_path=view_path)

    def serve() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "APPROVALS_SQLITE_PATH": str(store),
            "APPROVALS_VIEW_SQLITE_PATH": str(view_path),
        }
        approvals = str(Path(sys.executable).parent / "approvals")
        return subprocess.Popen(
            [approvals, "--nats-url", nats_server.url, "serve", "--only", "projection"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # Check: kill it with SIGKILL while it is catching up, part of the way through.
    process = serve()
    try:
        await eventually(lambda: 0 < view.position() < last)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = view.position()
        assert killed_at < last
        # Check: restarted, it finishes, and the view equals one rebuilt from the store.
        process = serve()
        await eventually(lambda: view.position() == last, within_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    assert view.count("acme") == {"approved": 10_000, "pending": 10_000}
    assert view.content_hash() == rebuilt_hash(app, tmp_path / "rebuilt.db")


def serve_env(settings: Settings) -> dict[str, str]:
    """The environment of an ``approvals serve`` process on ``settings``' store and view."""
    env = {**os.environ, "APPROVALS_STORE": settings.store, "APPROVALS_LEASE_TTL_S": "2",
           "APPROVALS_SQLITE_PATH": str(settings.sqlite_path),
           "APPROVALS_VIEW_SQLITE_PATH": str(settings.view_sqlite_path)}  # fmt: skip
    if settings.store == "postgres":
        assert settings.postgres_dsn is not None
        assert settings.postgres_schema is not None
        env |= {"APPROVALS_POSTGRES_DSN": settings.postgres_dsn,
                "APPROVALS_POSTGRES_SCHEMA": settings.postgres_schema}  # fmt: skip
    return env


def serve_projection(url: str, settings: Settings) -> subprocess.Popen[bytes]:
    approvals = str(Path(sys.executable).parent / "approvals")
    return subprocess.Popen(
        [approvals, "--nats-url", url, "serve", "--only", "projection"],
        env=serve_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
async def test_two_instances_of_one_view_both_answer_and_the_survivor_projects(
    nats_server: NatsServer, settings: Settings, tmp_path: Path
) -> None:
    from approvals.projections.status.service import ProjectionService

    settings = msgspec.structs.replace(settings, nats_url=nats_server.url, lease_ttl_s=2.0,
                                       view_sqlite_path=tmp_path / "status.db")  # fmt: skip
    app = Approvals(store_env(settings))
    nc = await nats.connect(nats_server.url)
    first = serve_projection(nats_server.url, settings)
    view = open_view(settings)
    try:
        last = write_history(app, 100)
        await publish_all(app, nc)
        await eventually(lambda: view.position() == last)
        async with ProjectionService(settings) as second:
            assert second.lease is not None
            # Check: the second serves queries while the first projects.
            assert not second.lease.held.is_set()
            counted = await nc.request("approvals.query.acme.count", b"{}", timeout=5)
            assert msgspec.json.decode(counted.data)["total"] == 100
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            last = write_history(app, 100)
            await publish_all(app, nc)
            # Check: once the dead instance's lease ages out, the survivor projects the rest.
            await eventually(lambda: view.position() == last)
            assert second.lease.held.is_set()
            assert view.count("acme") == {"approved": 100, "pending": 100}
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        await nc.close()
        app.close()
