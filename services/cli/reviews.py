"""The review queue: ``approvals reviews next|accept|reject``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import msgspec

from approvals.schemas import queries
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.events import SpendPicture
from approvals.services import reviews
from approvals.services.cli import Context, cli, console
from approvals.services.cli.params import ACTOR, APPROVAL_ID
from approvals.services.cli.reads import _query, budget_now
from approvals.services.cli.review_fields import block, requested_event, review_rows, what_to_review

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient


@cli.group("reviews")
def reviews_group() -> None:
    """Human-in-the-loop content, one at a time, oldest first."""


@reviews_group.command("next")
@click.option("--as", "member", required=True, type=ACTOR, help="The reviewer, e.g. user:ana.")
@click.option("--skill", help="Only requests of this skill.")
@click.pass_obj
def next_command(obj: Context, member: str, skill: str | None) -> None:
    """Take the oldest pending request you may decide, held for you for two minutes."""

    async def work(client: ApprovalsClient) -> int:
        found = await reviews.next_review(client.nc, client.workspace, member, skill=skill,
                                          timeout_s=obj.timeout)  # fmt: skip
        if found is None:
            if obj.as_json:
                click.echo(encoder.encode({"ok": True, "review": None}))
            else:
                click.echo("nothing to review")
            return 0
        history = await _query(obj, client, "history", {"approval_id": found["id"]},
                               queries.HistoryReply)  # fmt: skip
        if history is None:
            return 1
        what = what_to_review(requested_event(history.timeline))
        if obj.as_json:
            click.echo(encoder.encode({"ok": True, "review": found, "what_to_review": what}))
            return 0
        click.echo(console.table([
            ("review", found["id"]), ("title", found["title"]), ("summary", found["summary"]),
            ("skill", found["skill_name"]), ("risk", found["risk_level"]),
            ("requested by", found["requested_by"]), ("on behalf of", found["on_behalf_of"]),
            ("expires", found["expires_at"]), ("held for", f"{member}, {reviews.HOLD_S:g} s"),
            ("web", found["web_url"]),
        ]))  # fmt: skip
        click.echo("")
        spend = msgspec.convert(found["spend"], SpendPicture) if found.get("spend") else None
        now = await budget_now(client)
        click.echo(block("what to review", review_rows(what, found["digest"], spend, now)))
        return 0

    obj.run(work)


async def _digest(obj: Context, client: ApprovalsClient, review_id: str) -> str | None:
    data = await client.query("get", {"approval_id": review_id})
    if error := reply_error(data):
        console.fail(obj.as_json, error.code, error.message, data)
        return None
    return str(msgspec.json.decode(data)["approval"]["digest"])


@reviews_group.command("accept")
@click.argument("review_id", type=APPROVAL_ID)
@click.option("--as", "member", required=True, type=ACTOR, help="The reviewer, e.g. user:ana.")
@click.option("--reason", help="Why, for the requester and the auditors.")
@click.pass_obj
def accept_command(obj: Context, review_id: str, member: str, reason: str | None) -> None:
    """Approve the content under review (the digest of what it is)."""

    async def work(client: ApprovalsClient) -> int:
        digest = await _digest(obj, client, review_id)
        if digest is None:
            return 1
        body = {"approval_id": review_id, "approver": member, "digest": digest, "reason": reason}
        reply = await client.send("approve", {k: v for k, v in body.items() if v is not None})
        return obj.print_reply(reply)

    obj.run(work)


@reviews_group.command("reject")
@click.argument("review_id", type=APPROVAL_ID)
@click.option("--as", "member", required=True, type=ACTOR, help="The reviewer, e.g. user:ana.")
@click.option("--reason", help="What is wrong with it, for the skill and the auditors.")
@click.option("--auto-rerun", is_flag=True, help="Ask the requesting skill to regenerate it.")
@click.pass_obj
def reject_command(
    obj: Context, review_id: str, member: str, reason: str | None, auto_rerun: bool
) -> None:
    """Reject the content under review; with --auto-rerun the skill makes a new one."""
    body = {"approval_id": review_id, "approver": member, "reason": reason, "rerun": auto_rerun}
    obj.command("reject", body)
