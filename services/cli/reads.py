"""Reading: show, list, wait (from the status projection) and events (from the stream)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import click
import msgspec

from approvals.schemas import queries
from approvals.schemas.codec import reply_error
from approvals.schemas.replies import BudgetReply, BudgetState
from approvals.services.cli import Context, cli, console
from approvals.services.cli.filters import filter_options, utc
from approvals.services.cli.params import APPROVAL_ID, GateCommand

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient


async def _query(
    obj: Context, client: ApprovalsClient, verb: str, body: Any, reply_type: Any
) -> Any:
    """The typed reply, or None after printing the error."""
    data = await client.query(verb, body)
    if error := reply_error(data):
        console.fail(obj.as_json, error.code, error.message, data)
        return None
    return msgspec.json.decode(data, type=reply_type)


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.pass_obj
def show(obj: Context, approval_id: str) -> None:
    """Show one approval and its timeline, from the status projection."""

    async def work(client: ApprovalsClient) -> int:
        body = {"approval_id": approval_id}
        view = await _query(obj, client, "get", body, queries.ViewReply)
        if view is None:
            return 1
        history = await _query(obj, client, "history", body, queries.HistoryReply)
        if history is None:
            return 1
        console.print_view(obj.as_json, view.approval, history.timeline, await budget_now(client))
        return 0

    obj.run(work)


async def budget_now(client: ApprovalsClient) -> BudgetState | None:
    """The workspace's budget as it is now; None where it has none."""
    data = await client.query("budget", {})
    if reply_error(data):
        return None
    return msgspec.json.decode(data, type=BudgetReply).budget


@cli.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected", "expired", "cancelled", "responded"]),
    help="Only approvals in this state.",
)
@filter_options
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 500),
    help="How many to print per page.",
)
@click.option("--cursor", help="The next_cursor of the previous page.")
@click.pass_obj
def list_(obj: Context, /, **filters: Any) -> None:
    """List approvals, newest first."""
    body = {k: utc(v) for k, v in filters.items() if v is not None}

    async def work(client: ApprovalsClient) -> int:
        page = await _query(obj, client, "list", body, queries.ListReply)
        if page is None:
            return 1
        console.print_page(obj.as_json, page)
        return 0

    obj.run(work)


# An answer instead of a decision comes back to the caller as a rejection does.
WAIT_EXIT = {"approved": 0, "rejected": 1, "expired": 2, "cancelled": 2, "responded": 1}
TIMED_OUT = 3


@cli.command(cls=GateCommand)
@click.argument("approval_id", type=APPROVAL_ID)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0.1, 300),
    help="Seconds to wait for a decision before giving up (exit 3).",
)
@click.pass_obj
def wait(obj: Context, approval_id: str, timeout_s: float) -> None:
    """Wait for a decision.

    Exit 0 approved, 1 rejected or responded, 2 expired or cancelled, 3 timed out, 4 on an error (a
    malformed id or option too).
    """

    obj.error_exit = 4

    async def work(client: ApprovalsClient) -> int:
        client.timeout = timeout_s + 5.0
        body = {"approval_id": approval_id, "timeout_s": timeout_s}
        reply = await _query(obj, client, "wait", body, queries.WaitReply)
        if reply is None:
            return 4
        console.print_wait(obj.as_json, reply)
        return TIMED_OUT if reply.timed_out else WAIT_EXIT[reply.approval.status]

    obj.run(work)


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they arrive.")
@click.option("--approval", "approval_id", default="*", help="Only this approval's events.")
@click.pass_obj
def events(obj: Context, follow: bool, approval_id: str) -> None:
    """Print the workspace's events from the stream (--follow to tail it)."""

    async def work(client: ApprovalsClient) -> int:
        async with contextlib.aclosing(client.events(approval_id, follow=follow)) as stream:
            async for sequence, event in stream:
                console.print_event(obj.as_json, sequence, event)
        return 0

    obj.run(work)
