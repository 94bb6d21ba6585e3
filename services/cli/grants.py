"""Grants: list the grants a workspace's approvers gave, and revoke one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from approvals.schemas.codec import encoder
from approvals.schemas.replies import GrantsReply, GrantState
from approvals.services.cli import Context, cli
from approvals.services.cli.params import APPROVAL_ID, PERSON
from approvals.services.cli.reads import _query

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient


@cli.group()
def grants() -> None:
    """Grants given with approvals: similar requests approved at once for a while."""


@grants.command("list")
@click.option("--all", "every", is_flag=True, help="Also the expired and revoked grants.")
@click.pass_obj
def list_grants(obj: Context, every: bool) -> None:
    """The workspace's active grants (newest first): what each covers, its bounds and use."""

    async def work(client: ApprovalsClient) -> int:
        reply = await _query(obj, client, "grants", {"all": every}, GrantsReply)
        if reply is None:
            return 1
        if obj.as_json:
            click.echo(encoder.encode(reply))
            return 0
        print_grants(reply.grants)
        return 0

    obj.run(work)


def print_grants(listed: tuple[GrantState, ...]) -> None:
    header = ("ID", "STATUS", "ENDS (UTC)", "REQUESTER", "KIND", "PROVIDER", "DESTINATION",
              "CREDITS/RUN", "RUNS TODAY", "GRANTED BY")  # fmt: skip
    rows = [
        (str(g.grant_id), g.status, g.ends_at.strftime("%Y-%m-%d %H:%M"), g.requested_by, g.kind,
         g.provider or "-", g.destination or "-",
         "-" if g.max_credits is None else f"{g.max_credits:g}",
         f"{g.runs_today}/{g.runs}" if g.runs is not None else str(g.runs_today), g.granted_by)
        for g in listed
    ]  # fmt: skip
    if not rows:
        click.echo("no grants")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@grants.command("revoke")
@click.argument("grant_id", type=APPROVAL_ID)
@click.option("--by", required=True, type=PERSON, help="user:<id> of an approver or admin.")
@click.option("--reason", help="Why, for the auditors.")
@click.pass_obj
def revoke(obj: Context, grant_id: str, by: str, reason: str | None) -> None:
    """End grant GRANT_ID now: from this moment it covers nothing."""
    obj.command("revoke_grant", {"grant_id": grant_id, "by": by, "reason": reason})
