"""Workspaces: apply a settings file, show the settings in force, delegate approvals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from approvals.schemas.codec import encoder
from approvals.schemas.replies import BudgetReply, WorkspaceReply
from approvals.schemas.workspace import WorkspaceFileError, parse_workspace
from approvals.services.cli import Context, cli, console
from approvals.services.cli.params import PERSON, WORKSPACE
from approvals.services.cli.reads import _query

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient


@cli.group()
def workspace() -> None:
    """A workspace's settings: members, roles, quorum, channels, policy rules, budgets."""


@workspace.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--as", "by", required=True, type=PERSON, help="user:<id> of an admin of the workspace."
)
@click.option(
    "--workspace",
    "-w",
    "workspace_id",
    type=WORKSPACE,
    help="The workspace (default: the global --workspace).",
)
@click.pass_obj
def apply(obj: Context, file: Path, by: str, workspace_id: str | None) -> None:
    """Validate FILE (TOML) and put it in force; the change is recorded with who and when."""
    try:
        settings = parse_workspace(file.read_text(encoding="utf-8"))
    except (WorkspaceFileError, UnicodeDecodeError) as error:
        console.fail(obj.as_json, "invalid", f"{file}: {error}")
        raise SystemExit(1) from None
    if workspace_id is not None:
        obj = msgspec.structs.replace(obj, workspace=workspace_id)
    obj.command("configure", {"settings": settings, "by": by})


@workspace.command("show")
@click.argument("workspace_id", required=False, type=WORKSPACE)
@click.pass_obj
def show_workspace(obj: Context, workspace_id: str | None) -> None:
    """Print the settings in force of WORKSPACE_ID (default: the global --workspace)."""
    if workspace_id is not None:
        obj = msgspec.structs.replace(obj, workspace=workspace_id)

    async def work(client: ApprovalsClient) -> int:
        reply = await _query(obj, client, "workspace", {}, WorkspaceReply)
        if reply is None:
            return 1
        console.print_workspace(obj.as_json, reply)
        return 0

    obj.run(work)


@cli.command()
@click.option(
    "--by", required=True, type=PERSON, help="user:<id> of the approver who will be away."
)
@click.option(
    "--to", required=True, type=PERSON, help="user:<id> of the member who decides in their place."
)
@click.option(
    "--until",
    "ends_at",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]),
    help="When it ends (UTC); a time in the past ends a delegation now.",
)
@click.option("--days", type=float, help="Or: how many days from now it lasts.")
@click.option("--reason", help="Why, for the auditors.")
@click.pass_obj
def delegate(
    obj: Context,
    by: str,
    to: str,
    ends_at: datetime | None,
    days: float | None,
    reason: str | None,
) -> None:
    """Let another member decide in your place for a while (out of office)."""
    if (ends_at is None) == (days is None):
        raise click.UsageError("give one of --until or --days")
    if ends_at is None:
        assert days is not None
        ends_at = datetime.now(UTC) + timedelta(days=days)
    elif ends_at.tzinfo is None:
        ends_at = ends_at.replace(tzinfo=UTC)
    obj.command("delegate", {"by": by, "to": to, "ends_at": ends_at, "reason": reason})


@cli.group()
def budget() -> None:
    """A workspace's spend cap."""


@budget.command("show")
@click.argument("workspace_id", required=False, type=WORKSPACE)
@click.pass_obj
def show_budget(obj: Context, workspace_id: str | None) -> None:
    """The current period's cap, committed and remaining credits of WORKSPACE_ID."""
    if workspace_id is not None:
        obj = msgspec.structs.replace(obj, workspace=workspace_id)

    async def work(client: ApprovalsClient) -> int:
        reply = await _query(obj, client, "budget", {}, BudgetReply)
        if reply is None:
            return 1
        if obj.as_json:
            click.echo(encoder.encode(reply))
            return 0
        b = reply.budget
        click.echo(console.table([
            ("workspace", b.workspace_id), ("period", b.period), ("cap", f"{b.cap:g}"),
            ("committed", f"{b.committed:g}"), ("remaining", f"{b.remaining:g}"),
            ("max per run", None if b.max_per_run is None else f"{b.max_per_run:g}"),
            ("reservations held", b.held),
        ]))  # fmt: skip
        return 0

    obj.run(work)
