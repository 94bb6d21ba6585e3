"""The embedded default: a real nats-server and every service in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Protocol

from projections.status.service import ProjectionService
from services.approvals.service import CommandService
from services.natsserver import NatsServer
from services.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("approvals.dev")

DEFAULT_NATS_PORT = 4333


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def run_until_stopped(*services: Service) -> None:
    """Start the services, wait for SIGINT or SIGTERM, stop them in reverse order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        print("ready: Ctrl-C stops everything", flush=True)
        await stop.wait()
    finally:
        for service in reversed(started):
            await service.stop()


def run_dev(data_dir: Path, nats_port: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(data_dir / "jetstream", port=nats_port).start()
    try:
        settings = Settings.from_env(
            nats_url=server.url,
            store="sqlite",
            sqlite_path=data_dir / "approvals.db",
            view_sqlite_path=data_dir / "status.db",
        )
        print(f"nats-server   {server.url}  (JetStream store {data_dir / 'jetstream'})")
        print(f"event store   sqlite {settings.sqlite_path}")
        print(f"status view   sqlite {settings.view_sqlite_path}")
        print("services      commands on approvals.cmd.<workspace>.<verb>")
        print("              relay -> stream APPROVALS_EVENTS")
        print("              status projection, queries on approvals.query.<workspace>.<verb>")
        print("              expiry scheduler")
        print(f"try           approvals --nats-url {server.url} request --help", flush=True)
        asyncio.run(run_until_stopped(CommandService(settings), ProjectionService(settings)))
    finally:
        server.stop()
        print("stopped", flush=True)
