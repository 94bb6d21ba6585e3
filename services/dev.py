"""The embedded default: a real nats-server and every service in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from importlib.resources import files
from typing import TYPE_CHECKING, Protocol

import msgspec

from approvals.projections.status.service import ProjectionService
from approvals.schemas.commands import Configure
from approvals.schemas.workspace import WorkspaceSettings, parse_workspace
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.service import CommandService
from approvals.services.approvals.store import store_env
from approvals.services.delivery.service import DeliveryService
from approvals.services.gateway.app import GatewayService
from approvals.services.runtime import tracing
from approvals.services.runtime.natsserver import NatsServer
from approvals.services.runtime.settings import Settings
from approvals.services.spendcap.service import SpendCapService

if TYPE_CHECKING:
    from pathlib import Path

    from approvals.services.runtime.ops import Ops

log = logging.getLogger("approvals.dev")

DEFAULT_NATS_PORT = 4333


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def run_until_stopped(*services: Service, ops: Ops | None = None) -> None:
    """Start the services, wait for SIGINT or SIGTERM, stop them in reverse order. ``ops``
    answers from the start (alive, not ready) and is ready once every service has started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    if ops is not None:
        await ops.start()
    try:
        for service in services:
            await service.start()
            started.append(service)
        if ops is not None:
            ops.started = True
        print("ready: Ctrl-C stops everything", flush=True)
        await stop.wait()
    finally:
        if ops is not None:
            ops.started = False  # not ready while stopping
        for service in reversed(started):
            await service.stop()
        if ops is not None:
            await ops.stop()
        tracing.shutdown()  # export the spans still buffered


EXAMPLE_WORKSPACE = files("approvals.schemas") / "examples" / "workspace.toml"
DEV_WORKSPACE = "default"


def bootstrap_workspace(
    settings: Settings,
    workspace_id: str = DEV_WORKSPACE,
    workspace: WorkspaceSettings | None = None,
) -> str | None:
    """Apply ``workspace`` (by default the example file) to ``workspace_id`` if it has no
    settings yet, before the command service starts (so it is still the only writer); the admin
    it applied as, or None if the workspace was already set up."""
    settings_in_file = workspace or parse_workspace(EXAMPLE_WORKSPACE.read_text(encoding="utf-8"))
    admin = next(m for m, e in settings_in_file.members.items() if "admin" in e.roles)
    app = Approvals(store_env(settings), default_expiry_s=settings.default_expiry_s)
    try:
        if app.workspace(workspace_id) is not None:
            return None
        app.handle(workspace_id, Configure(settings=settings_in_file, by=admin))
        return admin
    finally:
        app.close()


def _dev_secret(path: Path) -> str:
    """The development gateway's secret, kept in the data folder so sessions survive a restart."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def run_dev(data_dir: Path, nats_port: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tracing.configure()  # before the services are built: the gateway's app asks
    # In a session of its own: a terminal's Ctrl-C reaches this process only, which stops the
    # services while the bus is still up, then the server.
    server = NatsServer(data_dir / "jetstream", port=nats_port, own_session=True).start()
    try:
        settings = Settings.from_env(
            nats_url=server.url,
            store="sqlite",
            sqlite_path=data_dir / "approvals.db",
            view_sqlite_path=data_dir / "status.db",
        )
        if settings.signing_key_path is None:
            settings = msgspec.structs.replace(
                settings, signing_key_path=data_dir / "signing-key.pem"
            )
        assert settings.signing_key_path is not None
        signer = Signer.from_file(settings.signing_key_path, create=True)
        settings = msgspec.structs.replace(
            settings,
            dev_sign_in=True,
            web_url=os.environ.get("APPROVALS_WEB_URL")
            or f"http://{settings.gateway_host}:{settings.gateway_port}",
            gateway_secret=settings.gateway_secret or _dev_secret(data_dir / "gateway-secret"),
        )
        gateway = GatewayService(settings)
        print(f"nats-server   {server.url}  (JetStream store {data_dir / 'jetstream'})")
        print(f"event store   sqlite {settings.sqlite_path}")
        print(f"status view   sqlite {settings.view_sqlite_path}")
        print(f"receipts      Ed25519 key {signer.key_id} in {settings.signing_key_path}")
        admin = bootstrap_workspace(settings)
        if admin is not None:
            print(f"workspace     {DEV_WORKSPACE}: applied {EXAMPLE_WORKSPACE} as {admin}")
        print("services      commands on approvals.cmd.<workspace>.<verb>")
        print("              relay -> stream APPROVALS_EVENTS")
        print("              status projection, queries on approvals.query.<workspace>.<verb>")
        print("              expiry scheduler")
        print("              spend caps: checks, releases, alerts on approvals.alerts.<ws>.budget")
        print("              delivery: inbox, webhook, email, Slack, Discord")
        print(f"gateway       {settings.web_url}  (web inbox, HTTP API /v1, OpenAPI /openapi.json;")
        print("              DEVELOPMENT sign-in on: anyone can sign in as anyone)")
        print(f"try           approvals --nats-url {server.url} request --help", flush=True)
        asyncio.run(
            run_until_stopped(
                CommandService(settings),
                ProjectionService(settings),
                SpendCapService(settings),
                DeliveryService(settings),
                gateway,
            )
        )
    finally:
        server.stop()
        print("stopped", flush=True)
