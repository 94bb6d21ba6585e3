"""Operating it: dev, serve, schema export, projections status and rebuild."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from approvals.schemas.codec import encoder
from approvals.services.cli import Context, cli, console
from approvals.services.dev import DEFAULT_NATS_PORT
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from approvals.projections.status.view import StatusView


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("var"),
    show_default=True,
    help="Where the store, the views and JetStream keep their files.",
)
@click.option("--nats-port", type=int, default=DEFAULT_NATS_PORT, show_default=True,
              help="The port of the embedded nats-server.")  # fmt: skip
def dev(data_dir: Path, nats_port: int) -> None:
    """Run everything on the embedded default: nats-server, SQLite, every service."""
    try:
        from approvals.services.dev import run_dev

        run_dev(data_dir, nats_port)
    except KeyboardInterrupt:
        # Ctrl-C before the runner took the signals over (while loading or starting): what had
        # started is stopped already (asyncio.run cancels the runner, which stops its services;
        # nats-server is stopped on the way out). Stopping is what Ctrl-C asks for.
        return


@cli.command()
@click.option(
    "--only",
    type=click.Choice(["commands", "projection", "spendcap", "delivery", "gateway"]),
    help="Run one service (default: commands, the status projection, spend caps and the gateway).",
)
@click.pass_obj
def serve(obj: Context, only: str | None) -> None:
    """Run the services against NATS_URL and the configured store."""
    from approvals.projections.status.service import ProjectionService
    from approvals.services.approvals.service import CommandService
    from approvals.services.delivery.service import DeliveryService
    from approvals.services.dev import Service, run_until_stopped
    from approvals.services.gateway.app import GatewayService
    from approvals.services.runtime import tracing
    from approvals.services.spendcap.service import SpendCapService

    tracing.configure()  # OTEL_EXPORTER_OTLP_ENDPOINT set: traces on (docs/observability.md)
    settings = Settings.from_env(nats_url=obj.nats_url)
    services: list[Service] = []
    if only in (None, "commands"):
        services.append(CommandService(settings))
    if only in (None, "projection"):
        services.append(ProjectionService(settings))
    if only in (None, "spendcap"):
        services.append(SpendCapService(settings))
    if only in (None, "delivery"):
        services.append(DeliveryService(settings))
    if only in (None, "gateway"):
        services.append(GatewayService(settings))
    from approvals.services.runtime.ops import Ops

    ops = Ops(settings, services) if settings.ops_port else None
    asyncio.run(run_until_stopped(*services, ops=ops))


@cli.command("temporal-resumer")
@click.option("--temporal-address", default="localhost:7233", show_default=True,
              envvar="TEMPORAL_ADDRESS", show_envvar=True,
              help="The Temporal frontend (host:port) the workflows run on.")  # fmt: skip
@click.option("--namespace", default="default", show_default=True,
              envvar="TEMPORAL_NAMESPACE", show_envvar=True,
              help="The Temporal namespace whose workflows it signals.")  # fmt: skip
@click.pass_obj
def temporal_resumer(obj: Context, temporal_address: str, namespace: str) -> None:
    """Signal each Temporal workflow when the approval it waits on ends (needs the client's
    temporal extra: pip install 'approvals-client[temporal]')."""
    try:
        from approvals.services.temporal.resumer import ResumerService
    except ImportError as missing:  # temporalio is an optional extra, not the server's
        raise click.ClickException(
            f"{missing}: install the client's temporal extra: pip install"
            " 'approvals-client[temporal]'"
        ) from None
    from approvals.services.dev import run_until_stopped

    settings = Settings.from_env(nats_url=obj.nats_url)
    service = ResumerService(settings, address=temporal_address, namespace=namespace)
    asyncio.run(run_until_stopped(service))


@cli.group()
def schema() -> None:
    """The JSON Schema of every message."""


@schema.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
def schema_export(directory: Path) -> None:
    """Write one JSON Schema file per message into DIRECTORY."""
    from approvals.schemas.export import export

    for path in export(directory):
        click.echo(str(path))


@cli.group()
def projections() -> None:
    """The status projection: its lag, and rebuilding it."""


@projections.command("status")
@click.pass_obj
def projections_status(obj: Context) -> None:
    """Lag: the last event in the store against the last one projected."""
    from approvals.projections.status.storage import open_view
    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.store import store_env

    settings = Settings.from_env()
    app = Approvals(store_env(settings))
    view = open_view(settings)
    store_last, projected = app.last_notification_id(), view.position()
    report = {"store_last": store_last, "projected": projected, "lag": store_last - projected}
    if obj.as_json:
        click.echo(encoder.encode(report))
    else:
        click.echo(console.table(list(report.items())))


@projections.command("rebuild")
@click.option("--from", "source", type=click.Choice(["store", "stream"]), required=True,
              help="Build from the event store or from the JetStream stream.")  # fmt: skip
@click.option(
    "--into",
    type=click.Path(path_type=Path),
    help="SQLite file for the new view [default: var/status-<source>.db].",
)
@click.option("--into-schema", help="PostgreSQL schema for the new view (postgres store).")
@click.pass_obj
def projections_rebuild(
    obj: Context, source: str, into: Path | None, into_schema: str | None
) -> None:
    """Build a fresh view from the event store or from the stream; print its content hash."""
    import msgspec

    from approvals.projections.status.storage import open_view

    settings = Settings.from_env(nats_url=obj.nats_url)
    if settings.store == "postgres":
        if not into_schema:
            raise click.UsageError("--into-schema is required with the postgres store")
        settings = msgspec.structs.replace(settings, view_postgres_schema=into_schema)
    target = into or settings.sqlite_path.parent / f"status-{source}.db"
    view = open_view(settings, sqlite_path=target)
    if view.position() != 0:
        raise click.UsageError(f"{target} already holds a view: rebuild into a new one")
    applied = _rebuild(obj, settings, source, view, _progress)
    click.echo("", err=True)
    report: dict[str, Any] = {
        "source": source,
        "events": applied,
        "position": view.position(),
        "content_hash": view.content_hash(),
        "into": into_schema or str(target),
    }
    if obj.as_json:
        click.echo(encoder.encode(report))
    else:
        click.echo(console.table(list(report.items())))


def _rebuild(obj: Context, settings: Settings, source: str, view: StatusView, progress: Any) -> int:
    from approvals.projections.status import rebuild

    if source == "store":
        from approvals.services.approvals.application import Approvals
        from approvals.services.approvals.store import store_env

        return rebuild.from_store(Approvals(store_env(settings)), view, progress)

    async def from_stream() -> int:
        from approvals.client import connect_once

        nc = await connect_once(obj.nats_url, obj.timeout, obj.bus_options())
        try:
            return await rebuild.from_stream(nc.jetstream(), view, progress)
        finally:
            await nc.close()

    return asyncio.run(from_stream())


def _progress(done: int, total: int) -> None:
    """Progress goes to stderr, so stdout stays one JSON document with --json."""
    click.echo(f"\rrebuilding: {done}/{total}", nl=False, err=True)  # positions, not events


@cli.group()
def web() -> None:
    """The web inbox."""


@web.command("link")
@click.option("--member", required=True, help="Who the link signs in, e.g. user:ana.")
@click.option("--minutes", default=15, show_default=True, help="How long the link is good for.")
def web_link(member: str, minutes: int) -> None:
    """A one-time sign-in link (needs the gateway's APPROVALS_GATEWAY_SECRET)."""
    from approvals.services.gateway.identity import Identity, person_name

    settings = Settings.from_env()
    if not settings.gateway_secret:
        raise click.UsageError("set APPROVALS_GATEWAY_SECRET to the gateway's secret")
    from approvals.services.gateway.app import gateway_secret

    token = Identity(settings, gateway_secret(settings)).link_token(
        person_name(member), ttl_s=minutes * 60
    )
    click.echo(f"{settings.web_url.rstrip('/')}/sign-in/link?token={token}")


@cli.group("bus")
def bus_group() -> None:
    """The JetStream streams and key-value buckets."""


@bus_group.command("setup")
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="Copies of every stream and bucket: 3 on a three-node cluster.")  # fmt: skip
@click.pass_obj
def bus_setup(obj: Context, replicas: int) -> None:
    """Create every stream and bucket with REPLICAS copies, or bring existing ones to it
    (run once per cluster, as the admin user, before the services start)."""
    from approvals.client import connect_once
    from approvals.services.runtime import bus

    async def work() -> list[tuple[str, str]]:
        nc = await connect_once(obj.nats_url, obj.timeout, obj.bus_options())
        try:
            return await bus.setup(nc.jetstream(), replicas)
        finally:
            await nc.close()

    done = asyncio.run(work())
    if obj.as_json:
        click.echo(
            encoder.encode({"ok": True, "streams": [{"name": n, "done": d} for n, d in done]})
        )
    else:
        click.echo(console.table(done))
