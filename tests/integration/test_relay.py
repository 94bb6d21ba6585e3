"""The relay under faults: a crash between commit and publish, a restart, a stale or second relay,
and a command service killed with SIGKILL in the middle of a load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import nats
import pytest
from nats.errors import NoRespondersError

from approvals.schemas import commands
from approvals.schemas.codec import encoder
from approvals.schemas.subjects import MSG_ID_HEADER, NOTIFICATION_ID_HEADER, STREAM
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.relay import Relay, RelayInterrupted
from approvals.services.approvals.service import CommandService
from approvals.services.approvals.store import store_env
from approvals.services.runtime.lease import Lease
from approvals.services.runtime.settings import Settings
from tests.helpers import eventually
from tests.workspaces import approval_notifications, configure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

    from approvals.client import ApprovalsClient
    from approvals.services.runtime.natsserver import NatsServer

    Started = tuple[CommandService, ApprovalsClient]
    StartRelay = Callable[..., Awaitable[Relay]]
    Serve = Callable[[], subprocess.Popen[bytes]]


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


def write_history(app: Approvals, approvals: int, first: int = 0) -> int:
    """Requests, a third approved and a third rejected: the store's last notification id."""
    configure(app, "acme")
    handled = app.handle_batch([("acme", a_request(i)) for i in range(first, first + approvals)])
    decided = [r.approval for r in handled.results if not isinstance(r, Exception)]
    decisions: list[tuple[str, commands.Command]] = []
    for k, approval in enumerate(decided):
        assert approval is not None
        if k % 3 == 0:
            decisions.append(
                ("acme", commands.Approve(approval_id=approval.id, approver="user:ana",
                                          digest=approval.request.digest))
            )  # fmt: skip
        elif k % 3 == 1:
            decisions.append(("acme", commands.Reject(approval_id=approval.id, approver="user:bo")))
    app.handle_batch(decisions)
    return app.last_notification_id()


async def stream_messages(js: JetStreamContext) -> list[RawStreamMsg]:
    info = await js.stream_info(STREAM)
    return [await js.get_msg(STREAM, seq) for seq in range(1, info.state.last_seq + 1)]


async def assert_stream_is_the_log(app: Approvals, js: JetStreamContext) -> None:
    """The stream holds every notification once, in order: message k is notification k."""
    log = list(app.notifications(1, 1_000_000))
    messages = await stream_messages(js)
    assert len(messages) == len(log)
    assert [n.id for n in log] == list(range(1, len(log) + 1))
    for notification, message in zip(log, messages, strict=True):
        headers = message.headers or {}
        assert message.seq == notification.id
        assert headers[NOTIFICATION_ID_HEADER] == str(notification.id)
        assert headers[MSG_ID_HEADER] == (
            f"{notification.originator_id}:{notification.originator_version}"
        )
        assert message.data == notification.state
    msg_ids = [(m.headers or {})[MSG_ID_HEADER] for m in messages]
    assert len(set(msg_ids)) == len(msg_ids)


async def stream_last_seq(js: JetStreamContext) -> int:
    return (await js.stream_info(STREAM)).state.last_seq


async def idle(relay: Relay, last: int) -> None:
    """Wait until the relay has published up to ``last`` and no publishing pass is running."""
    await eventually(lambda: relay.published_up_to == last and not relay._lock.locked())


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Approvals]:
    application = Approvals(store_env(Settings(sqlite_path=tmp_path / "approvals.db")))
    yield application
    application.close()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


@pytest.fixture
async def relays(app: Approvals, nc: Client) -> AsyncIterator[StartRelay]:
    """Start relays on the test's store and server; the ones still running stop at teardown."""
    started: list[Relay] = []

    async def start(**options: Any) -> Relay:
        relay = Relay(app, nc, **options)
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


async def test_killed_between_commit_and_publish_loses_nothing(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    # Check: events committed while no relay runs, the state a crash after commit leaves behind.
    last = write_history(app, 300)
    assert len(approval_notifications(app)) == 500
    js = nc.jetstream()
    # Check: a relay started afterwards publishes all of them, in several batches.
    relay = await relays(batch_size=64)
    await relay.publish_pending()
    assert relay.published_up_to == last
    await assert_stream_is_the_log(app, js)


async def test_restarted_it_publishes_nothing_twice(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    last = write_history(app, 90)
    js = nc.jetstream()
    first = await relays()
    await first.publish_pending()
    await first.stop()
    # Check: a new relay reads its position from the stream and has nothing to publish.
    second = await relays()
    assert second.published_up_to == last
    assert await second.publish_pending() == 0
    assert await stream_last_seq(js) == last
    # Check: new events follow, once each, when it is nudged.
    more = write_history(app, 30, first=90)
    second.nudge()
    await eventually(lambda: second.published_up_to == more)
    await assert_stream_is_the_log(app, js)


async def test_a_stale_position_is_refused_and_resynced(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    last = write_history(app, 60)
    js = nc.jetstream()
    relay = await relays(batch_size=16, poll_interval_s=3600)
    await idle(relay, last)
    # Check: a relay that believes the stream is empty, as a second relay started late would:
    # its first batch, events the stream holds, is refused whole.
    more = write_history(app, 15, first=60)
    relay.published_up_to, relay._last_seq = 0, 0
    with pytest.raises(RelayInterrupted, match="wrong last sequence"):
        await relay.publish_pending()
    assert await stream_last_seq(js) == last
    # Check: after a resync it carries on where the stream ends.
    await relay.resync()
    assert relay.published_up_to == last
    assert await relay.publish_pending() == more - last
    await assert_stream_is_the_log(app, js)


async def test_a_running_relay_with_a_stale_position_recovers_by_itself(
    app: Approvals, nc: Client, relays: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    last = write_history(app, 60)
    js = nc.jetstream()
    relay = await relays(poll_interval_s=3600)
    await idle(relay, last)
    more = write_history(app, 15, first=60)
    relay.published_up_to, relay._last_seq = 0, 0
    relay.nudge()
    # Check: its own loop meets the refusal, re-reads the position and publishes the rest.
    await eventually(lambda: relay.published_up_to == more)
    assert "relay interrupted" in caplog.text
    await assert_stream_is_the_log(app, js)


async def test_two_relays_at_once_publish_each_event_exactly_once(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    js = nc.jetstream()
    one = await relays(batch_size=16)
    two = await relays(batch_size=16)
    # Check: both are nudged after every commit while they race for the stream.
    for round_ in range(20):
        await asyncio.to_thread(write_history, app, 10, round_ * 10)
        one.nudge()
        two.nudge()
    last = app.last_notification_id()
    await eventually(lambda: max(one.published_up_to, two.published_up_to) == last)
    await assert_stream_is_the_log(app, js)


async def test_a_commit_on_the_instance_without_the_lease_is_published_at_once(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    js = nc.jetstream()
    # Neither polls within the test: only a nudge moves the holder.
    holder = await relays(poll_interval_s=3600, lease=Lease(nc, "relay", ttl_s=30))
    other = await relays(poll_interval_s=3600, lease=Lease(nc, "relay", ttl_s=30))
    assert holder.publishing
    assert not other.publishing
    last = await asyncio.to_thread(write_history, app, 10)
    other.nudge()  # what the other instance's command handlers do after their commit
    # Check: the holder hears of it over the bus and publishes it.
    await eventually(lambda: holder.published_up_to == last)
    await assert_stream_is_the_log(app, js)


@pytest.mark.parametrize("ticks", range(6))
async def test_a_stop_right_after_a_nudge_still_stops(
    app: Approvals, relays: StartRelay, ticks: int
) -> None:
    last = write_history(app, 3)
    relay = await relays(poll_interval_s=3600)
    await idle(relay, last)
    # Check: a commit's nudge a few loop turns before the stop does not swallow the stop.
    relay.nudge()
    for _ in range(ticks):
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(relay.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    assert done, "the relay did not stop"
    await stopping


async def test_a_stop_in_the_middle_of_publishing_publishes_everything_committed(
    app: Approvals, nc: Client, relays: StartRelay
) -> None:
    relay = await relays(batch_size=200, poll_interval_s=3600)
    await idle(relay, 0)
    last = write_history(app, 1500)
    relay.nudge()
    # Check: stopped while a batch is on its way, it still publishes all that is committed.
    await eventually(lambda: 0 < relay.published_up_to < last)
    await relay.stop()
    await assert_stream_is_the_log(app, nc.jetstream())


# -- through the command service ------------------------------------------------------------

REQUEST: dict[str, Any] = {
    "requested_by": "service:enricher",
    "skill_name": "crm-sync",
    "skill_execution_id": "exec-1",
    "title": "Sync contacts",
    "summary": "",
    "risk_level": "high",
    "action": {"kind": "crm_write", "mode": "live"},
}
READ = {**REQUEST, "action": {"kind": "read", "mode": "live"}}


def delivery(approval_id: str) -> dict[str, Any]:
    return {"approval_id": approval_id, "channel": "slack", "target": "#ops"}


def approve_body(approval: dict[str, Any]) -> dict[str, Any]:
    return {"approval_id": approval["id"], "approver": "user:ana", "digest": approval["digest"]}


async def command(nc: Client, verb: str, body: dict[str, Any], wait_s: float = 10.0) -> Any:
    """Send a command that must succeed; its reply."""
    msg = await nc.request(f"approvals.cmd.acme.{verb}", encoder.encode(body), timeout=wait_s)
    reply: dict[str, Any] = msgspec.json.decode(msg.data)
    assert reply["ok"] is True, reply
    return reply


async def test_per_approval_versions_reach_the_stream_in_order(command_service: Started) -> None:
    service, client = command_service
    js = client.nc.jetstream()

    async def request_deliver_approve(i: int) -> str:
        reply = await command(client.nc, "request", {**REQUEST, "skill_execution_id": f"e-{i}"})
        approval = reply["approval"]
        await command(client.nc, "deliver", delivery(approval["id"]))
        await command(client.nc, "approve", approve_body(approval))
        return str(approval["id"])

    ids = await asyncio.gather(*(request_deliver_approve(i) for i in range(60)))
    assert service.app is not None
    last = service.app.last_notification_id()
    await eventually(lambda: stream_last_seq_is(js, last))
    # Check: on the stream every approval shows versions 1, 2, 3 in that order.
    versions = versions_on_stream(await stream_messages(js))
    assert {approval_id: versions[approval_id] for approval_id in ids} == {
        approval_id: [1, 2, 3] for approval_id in ids
    }


async def test_an_instance_without_the_lease_hands_its_commands_to_the_holder(
    command_service: Started, command_settings: Settings
) -> None:
    first, client = command_service
    async with CommandService(command_settings) as second:
        assert second.app is not None
        assert second.relay is not None
        assert second.handlers is not None
        assert first.handlers is not None
        assert not second.relay.publishing
        decided_here: list[int] = []
        handed_over: list[str] = []
        handle_batch, hand_over = second.app.handle_batch, second.handlers._hand_over

        def counted_batch(batch: Any, *args: Any) -> Any:
            decided_here.append(len(batch))
            return handle_batch(batch, *args)

        async def counted_hand_over(msg: Any) -> None:
            handed_over.append(msg.subject)
            await hand_over(msg)

        second.app.handle_batch = counted_batch  # type: ignore[method-assign]
        second.handlers._hand_over = counted_hand_over  # type: ignore[method-assign]

        async def ask(tag: str, n: int) -> set[str]:
            replies = await asyncio.gather(*(
                command(client.nc, "request", {**REQUEST, "skill_execution_id": f"{tag}-{i}"})
                for i in range(n)
            ))  # fmt: skip
            return {reply["approval"]["id"] for reply in replies}

        # Check: the queue group gave the second some commands; it handed each to the holder,
        # which decided them (one approval per request, every reply ok).
        assert len(await ask("h", 60)) == 60
        assert handed_over
        assert decided_here == []
        # Check: while nobody takes handed-over commands (a takeover), the second decides itself.
        assert first.handlers._leading is not None
        assert first.handlers._lead is not None
        first.handlers._leading.cancel()
        await first.handlers._lead.unsubscribe()
        first.handlers._leading = first.handlers._lead = None
        assert len(await ask("t", 60)) == 60
        assert sum(decided_here) > 0
    app = first.app
    assert app is not None
    stored = [n for n in app.notifications(1, 10**6) if b'"type":"requested"' in n.state]
    assert len(stored) == 120


async def stream_last_seq_is(js: JetStreamContext, seq: int) -> bool:
    return await stream_last_seq(js) == seq


def versions_on_stream(messages: list[RawStreamMsg]) -> dict[str, list[int]]:
    """Each approval's versions in the order the stream holds them."""
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        approval_id, version = (message.headers or {})[MSG_ID_HEADER].split(":")
        versions[approval_id].append(int(version))
    return versions


# -- a command service killed in the middle of a load -------------------------------------------


class Load:
    """Clients that each request, deliver and approve, over and over, until told to stop.

    ``acked`` holds every (approval id, version) an ok reply acknowledged; a command without a
    reply (the service was killed, or not running) abandons that approval for a new one.
    """

    def __init__(self, nc: Client, clients: int) -> None:
        self.nc = nc
        self.acked: set[tuple[str, int]] = set()
        self.errors: list[dict[str, Any]] = []
        self.stopping = False
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(clients)]

    @property
    def acks(self) -> int:
        return len(self.acked)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self._tasks)

    async def _client(self, c: int) -> None:
        i = 0
        while not self.stopping:
            i += 1
            approval = await self._send("request", {**REQUEST, "skill_execution_id": f"{c}-{i}"})
            if approval is None:
                continue
            if await self._send("deliver", delivery(approval["id"])) is not None:
                await self._send("approve", approve_body(approval))

    async def _send(self, verb: str, body: dict[str, Any]) -> dict[str, Any] | None:
        subject = f"approvals.cmd.acme.{verb}"
        try:
            msg = await self.nc.request(subject, encoder.encode(body), timeout=3.0)
        except (NoRespondersError, TimeoutError):
            await asyncio.sleep(0.05)  # back off while the service is down
            return None
        reply: dict[str, Any] = msgspec.json.decode(msg.data)
        if not reply["ok"]:
            self.errors.append(reply)
            return None
        approval: dict[str, Any] = reply["approval"]
        self.acked.add((approval["id"], approval["version"]))
        return approval


LEASE_TTL_S = 2.0


@pytest.fixture
def serve(nats_server: NatsServer, tmp_path: Path) -> Iterator[Serve]:
    """Start the command service (``approvals serve --only commands``) on the test's store and
    server, its output in ``serve-<n>.log``; leftovers are killed."""
    processes: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "APPROVALS_SQLITE_PATH": str(tmp_path / "approvals.db"),
        "APPROVALS_VIEW_SQLITE_PATH": str(tmp_path / "status.db"),
        "APPROVALS_LEASE_TTL_S": str(LEASE_TTL_S),
    }
    approvals = str(Path(sys.executable).parent / "approvals")
    store = Approvals(store_env(Settings(sqlite_path=tmp_path / "approvals.db")))
    configure(store, "acme")
    store.close()

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"serve-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [approvals, "--nats-url", nats_server.url, "serve", "--only", "commands"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def answering(nc: Client) -> bool:
    """The command service replies: a read needs no approval and stores nothing."""
    try:
        reply = await command(nc, "request", READ, wait_s=1.0)
    except (NoRespondersError, TimeoutError):
        return False
    return bool(reply["outcome"] == "not_required")


def alive(process: subprocess.Popen[bytes], tmp_path: Path) -> bool:
    """True while the process runs; fails the test with its log once it has exited."""
    if process.poll() is None:
        return True
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("serve-*.log")))
    pytest.fail(f"approvals serve exited with {process.returncode}:\n{logs}")


async def exited(process: subprocess.Popen[bytes], within_s: float = 15.0) -> int:
    await eventually(lambda: process.poll() is not None, within_s)
    return process.wait()


@pytest.mark.slow
async def test_a_service_killed_mid_load_loses_no_acknowledged_command(
    nc: Client, serve: Serve, tmp_path: Path
) -> None:
    process = serve()
    await eventually(lambda: alive(process, tmp_path) and answering(nc), within_s=30)
    load = Load(nc, clients=30)
    try:
        # Check: SIGKILL in the middle of the load, after 300 acknowledged commands.
        await eventually(lambda: alive(process, tmp_path) and load.acks >= 300, within_s=60)
        process.send_signal(signal.SIGKILL)
        assert await exited(process) == -signal.SIGKILL
        acked_before_kill = load.acks
        # Check: restarted on the same store and stream, it takes commands again.
        process = serve()
        await eventually(
            lambda: alive(process, tmp_path) and load.acks >= acked_before_kill + 300, within_s=60
        )
        # Check: a graceful stop while commands still arrive.
        process.send_signal(signal.SIGTERM)
        assert await exited(process) == 0
    finally:
        await load.stop()
    assert load.errors == []

    app = Approvals(store_env(Settings(sqlite_path=tmp_path / "approvals.db")))
    try:
        # Check: every acknowledged command is in the store.
        stored = {(str(n.originator_id), n.originator_version) for n in app.notifications(1, 10**6)}
        assert load.acked <= stored
        for approval_id, version in load.acked:
            assert app.get(UUID(approval_id)).version >= version
        # Check: the stream is the store's log, in order, with nothing twice.
        js = nc.jetstream()
        await assert_stream_is_the_log(app, js)
        # Check: on the stream each approval's versions count up from 1.
        for approval_id, versions in versions_on_stream(await stream_messages(js)).items():
            assert versions == list(range(1, len(versions) + 1)), approval_id
    finally:
        app.close()


@pytest.mark.slow
async def test_two_instances_share_the_commands_and_one_relay_publishes_until_it_dies(
    nc: Client, serve: Serve, nats_server: NatsServer, tmp_path: Path
) -> None:
    first = serve()
    await eventually(lambda: alive(first, tmp_path) and answering(nc), within_s=30)
    leases = await nc.jetstream().key_value("approvals_leases")
    holder = await leases.get("relay")
    assert f":{first.pid}:" in (holder.value or b"").decode()
    settings = Settings(
        nats_url=nats_server.url,
        sqlite_path=tmp_path / "approvals.db",
        view_sqlite_path=tmp_path / "status.db",
        lease_ttl_s=LEASE_TTL_S,
    )
    async with CommandService(settings) as second:
        assert second.relay is not None
        assert second.app is not None
        load = Load(nc, clients=20)
        try:
            # Check: both instances answer commands; only the first publishes.
            await eventually(lambda: alive(first, tmp_path) and load.acks >= 300, within_s=60)
            assert not second.relay.publishing
            # Check: the first dies; the second takes the lease within its length and goes on.
            first.send_signal(signal.SIGKILL)
            assert await exited(first) == -signal.SIGKILL
            acked = load.acks
            await eventually(lambda: second.relay.publishing, within_s=3 * LEASE_TTL_S)
            await eventually(lambda: load.acks >= acked + 300, within_s=60)
        finally:
            await load.stop()
        assert load.errors == []
        # Check: every acknowledged command is stored once, and the stream is the log.
        app = second.app
        stored = {(str(n.originator_id), n.originator_version) for n in app.notifications(1, 10**6)}
        assert load.acked <= stored
        last = app.last_notification_id()
        js = nc.jetstream()
        await eventually(lambda: stream_last_seq_is(js, last), within_s=30)
        await assert_stream_is_the_log(app, js)
