"""Commands: request, check, approve, reject, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from approvals.services.cli import Context, cli
from approvals.services.cli.params import ACTOR, APPROVAL_ID, DIGEST, JSON_OBJECT, PERSON
from approvals.services.cli.request_options import request_body, request_options

if TYPE_CHECKING:
    from approvals.schemas.subjects import CommandVerb
    from approvals.services.client import ApprovalsClient


@cli.command()
@request_options
@click.pass_obj
def request(obj: Context, /, body: Any, **fields: Any) -> None:
    """Ask for approval of an action."""
    _send_request(obj, "request", body, fields)


@cli.command()
@request_options
@click.pass_obj
def check(obj: Context, /, body: Any, **fields: Any) -> None:
    """Would this action need approval, and why? Nothing is stored."""
    _send_request(obj, "check", body, fields)


def _send_request(obj: Context, verb: CommandVerb, body: Any, fields: dict[str, Any]) -> None:
    if body is not None:
        obj.run(lambda client: _send_raw(obj, client, verb, body.read()))
        return
    obj.command(verb, request_body(fields))


async def _send_raw(obj: Context, client: ApprovalsClient, verb: CommandVerb, data: bytes) -> int:
    return obj.print_reply(await client.send_raw(verb, data))


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option("--approver", required=True, type=ACTOR, help="user:<id> of the person approving.")
@click.option(
    "--digest",
    required=True,
    type=DIGEST,
    help="The digest of the request you were shown (approvals show ID).",
)
@click.option("--reason", help="Why, for the requester and the auditors.")
@click.option(
    "--for", "for_member", type=PERSON, help="user:<id> whose delegation you decide under."
)
@click.option(
    "--edits",
    type=JSON_OBJECT,
    help='Approve a narrower version, e.g. \'{"max_credits": 10, "proposed_payload": {...}}\'.',
)
@click.pass_obj
def approve(
    obj: Context,
    approval_id: str,
    approver: str,
    digest: str,
    reason: str | None,
    for_member: str | None,
    edits: dict[str, Any] | None,
) -> None:
    """Approve a pending request (one vote where the workspace asks for a quorum)."""
    obj.command(
        "approve",
        {"approval_id": approval_id, "approver": approver, "digest": digest, "reason": reason,
         "for_member": for_member, "edits": edits},
    )  # fmt: skip


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option(
    "--approver",
    required=True,
    type=ACTOR,
    help="Who rejects: user:<id> (or service:<name>, which may veto).",
)
@click.option("--reason", help="Why, for the requester and the auditors.")
@click.option("--rerun", is_flag=True, help="Ask the caller to prepare a new request.")
@click.option(
    "--for", "for_member", type=PERSON, help="user:<id> whose delegation you decide under."
)
@click.pass_obj
def reject(
    obj: Context,
    approval_id: str,
    approver: str,
    reason: str | None,
    rerun: bool,
    for_member: str | None,
) -> None:
    """Reject a pending request (one rejection rejects it)."""
    obj.command(
        "reject",
        {"approval_id": approval_id, "approver": approver, "reason": reason, "rerun": rerun,
         "for_member": for_member},
    )  # fmt: skip


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option("--by", required=True, type=ACTOR, help="Who cancels: user:<id> or service:<name>.")
@click.option("--reason", help="Why, for the approvers and the auditors.")
@click.pass_obj
def cancel(obj: Context, approval_id: str, by: str, reason: str | None) -> None:
    """Cancel a pending request."""
    obj.command("cancel", {"approval_id": approval_id, "by": by, "reason": reason})


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option("--digest", required=True, type=DIGEST, help="The digest of the action about to run.")
@click.option(
    "--executor", required=True, type=ACTOR, help="Who runs it: service:<name> or user:<id>."
)
@click.pass_obj
def redeem(obj: Context, approval_id: str, digest: str, executor: str) -> None:
    """Claim an approved action just before running it: once, in time, the same digest."""
    obj.command("redeem", {"approval_id": approval_id, "digest": digest, "executor": executor})


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option(
    "--credits-used", required=True, type=click.FloatRange(min=0), help="The credits the run used."
)
@click.option(
    "--outcome",
    required=True,
    type=click.Choice(["succeeded", "failed", "partial"]),
    help="How the run ended.",
)
@click.option("--summary", default="", help="What the run did.")
@click.option(
    "--external-ref",
    "external_refs",
    multiple=True,
    help="An id in the system written to (a CRM record, a campaign); repeat for each.",
)
@click.option("--by", required=True, type=ACTOR, help="Who ran it: service:<name> or user:<id>.")
@click.pass_obj
def report(
    obj: Context,
    approval_id: str,
    credits_used: float,
    outcome: str,
    summary: str,
    external_refs: tuple[str, ...],
    by: str,
) -> None:
    """Record what a redeemed run did and used (over the ceiling is flagged)."""
    obj.command(
        "report",
        {"approval_id": approval_id, "credits_used": credits_used, "outcome": outcome,
         "summary": summary, "external_refs": list(external_refs), "by": by},
    )  # fmt: skip
