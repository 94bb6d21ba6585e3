"""The audit commands that read the log: history, replay, export and report."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal
from uuid import UUID

import click
import msgspec
import nats

from approvals.client import ApprovalsError, connect_once
from approvals.client.refusals import Refusals
from approvals.services.approvals.notification_log import store_sections
from approvals.services.audit import export as exporting
from approvals.services.audit import report as reporting
from approvals.services.audit.history import history as approval_history
from approvals.services.audit.replay import Replay
from approvals.services.audit.source import bulk, stream_sections
from approvals.services.cli.audit import (
    Refused,
    audit,
    comparison,
    emit,
    open_store,
    progress,
    rendering,
    run,
    when,
)
from approvals.services.cli.params import WORKSPACE

if TYPE_CHECKING:
    from approvals.services.cli import Context


@audit.command("history")
@click.argument("approval_id")
@click.pass_obj
def history_command(obj: Context, approval_id: str) -> None:
    """Every event of one approval from the event store, in order: who, through which door,
    what digest, when."""

    def work() -> int:
        try:
            wanted = UUID(approval_id)
        except ValueError:
            raise Refused("invalid", f"{approval_id!r} is not an approval id") from None
        with open_store() as app:
            found = approval_history(app, wanted)
        if found is None:
            raise Refused("not_found", f"the store holds no approval {approval_id}")
        emit(obj, found, rendering.history_text(found))
        return 0

    run(obj, work)


# -- replay


@audit.command("replay")
@click.option("--approval", "approval_id", help="One approval (its events and those naming it).")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: everything).")
@click.option("--at", "at_text", help="The state at this time (ISO 8601).")
@click.option("--position", type=click.IntRange(min=0), help="The state after this position.")
@click.option(
    "--source",
    type=click.Choice(["store", "stream"]),
    default="store",
    show_default=True,
    help="The event store, or the JetStream stream (no database).",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Compare the approvals with the live read model (the status projection).",
)
@click.option("--details", is_flag=True, help="List every approval's state.")
@click.pass_obj
def replay_command(
    obj: Context,
    approval_id: str | None,
    workspace: str | None,
    at_text: str | None,
    position: int | None,
    source: Literal["store", "stream"],
    compare: bool,
    details: bool,
) -> None:
    """Rebuild state from the log up to a point in time or position: status, votes, budgets."""

    def work() -> int:
        at = when(at_text, "--at")
        try:
            wanted = UUID(approval_id) if approval_id else None
        except ValueError:
            raise Refused("invalid", f"{approval_id!r} is not an approval id") from None
        if compare and (at is not None or position is not None):
            raise Refused(
                "invalid", "--compare compares the latest state: leave out --at and --position"
            )
        replay = Replay(workspace=workspace, approval_id=wanted, up_to=position, at=at)
        if source == "store":
            with open_store() as app, bulk():
                total = min(app.last_notification_id(), position or sys.maxsize)
                for section in progress("replaying", total, store_sections(app, up_to=position)):
                    if not replay.feed(section):
                        break
        else:
            asyncio.run(_replay_stream(obj, replay, workspace or "*", str(wanted or "*")))
        result = replay.result(source, details=details)
        if compare:
            found = asyncio.run(comparison.compare(obj, replay))
            result = msgspec.structs.replace(result, comparison=found)
        emit(obj, result, rendering.replay_text(result))
        return 0 if result.comparison is None or not result.comparison.differences else 1

    run(obj, work)


async def _replay_stream(obj: Context, replay: Replay, workspace: str, approval: str) -> None:
    refusals = Refusals()  # a workspace's caller may read its own workspace's events only
    try:
        nc = await connect_once(obj.nats_url, obj.timeout, obj.bus_options(),
                                error_cb=refusals.hear)  # fmt: skip
    except (OSError, TimeoutError, nats.errors.Error) as error:
        raise Refused("unavailable", f"cannot reach {obj.nats_url}: {error!r}") from None

    async def read() -> None:
        with bulk():
            sections = stream_sections(nc, workspace=workspace, approval_id=approval,
                                       up_to=replay.up_to, refusals=refusals)  # fmt: skip
            async for section in sections:
                if not replay.feed(section):
                    break

    try:
        await refusals.guard(read())
    except ApprovalsError as error:
        raise Refused(error.code, error.message) from None
    except (TimeoutError, nats.errors.Error) as error:
        raise Refused("unavailable", f"the stream does not answer ({error!r})") from None
    finally:
        await nc.drain()


# -- export and report


@audit.command("export")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: every event).")
@click.option("--since", help="Events at or after this time (ISO 8601).")
@click.option("--until", help="Events before this time (ISO 8601).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here (default: stdout).",
)
@click.pass_obj
def export_command(
    obj: Context, workspace: str | None, since: str | None, until: str | None, output: Path | None
) -> None:
    """JSON Lines of the events, each with its position: for a data warehouse, or `verify`."""

    def work() -> int:
        start, end = when(since, "--since"), when(until, "--until")
        with open_store() as app:
            total = app.last_notification_id()
            sink: IO[bytes] = output.open("wb") if output else sys.stdout.buffer
            try:
                written = exporting.export(
                    progress("exporting", total, store_sections(app)),
                    sink,
                    workspace=workspace,
                    since=start,
                    until=end,
                )
            finally:
                if output:
                    sink.close()
                else:
                    sink.flush()
        click.echo(f"exported {written:,} events" + (f" to {output}" if output else ""), err=True)
        return 0

    run(obj, work)


@audit.command("report")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: each workspace).")
@click.option(
    "--period",
    type=click.Choice(["day", "week", "month"]),
    default="month",
    show_default=True,
    help="The length of each row of the report.",
)
@click.option("--since", help="From this time (ISO 8601).")
@click.option("--until", help="Before this time (ISO 8601).")
@click.option(
    "--chart",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also draw the decisions over time: a .png or .svg file.",
)
@click.pass_obj
def report_command(
    obj: Context,
    workspace: str | None,
    period: Literal["day", "week", "month"],
    since: str | None,
    until: str | None,
    chart: Path | None,
) -> None:
    """Requests, decisions, time to decision, credits approved and used, top requesters."""

    def work() -> int:
        if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
            raise Refused("invalid", "--chart must name a .png or .svg file")
        summary = reporting.Summary(
            period,
            workspace=workspace,
            since=when(since, "--since"),
            until=when(until, "--until"),
        )
        with open_store() as app, bulk():
            total = app.last_notification_id()
            for section in progress("reading", total, store_sections(app)):
                summary.feed(section)
        result = summary.report()
        if chart is not None:
            reporting.chart(result, chart)
            click.echo(f"chart written to {chart}", err=True)
        emit(obj, result, rendering.report_text(result))
        return 0

    run(obj, work)
