"""Commands: request, check, approve, reject, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from approvals.services.cli import Context, cli
from approvals.services.cli.bulk import Decide, decide_many
from approvals.services.cli.filters import filter_options
from approvals.services.cli.params import ACTOR, APPROVAL_ID, DIGEST, JSON_OBJECT, PERSON
from approvals.services.cli.request_options import request_body, request_options

if TYPE_CHECKING:
    from collections.abc import Callable

    from approvals.client import ApprovalsClient
    from approvals.schemas.subjects import CommandVerb


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


def many_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Deciding several: ``--all-matching`` the list filters, ``--yes`` to skip the question."""
    command = filter_options(command)
    yes = click.option("--yes", "-y", is_flag=True, help="Decide without asking (--json needs it).")
    command = yes(command)
    return click.option(
        "--all-matching", is_flag=True,
        help="Every pending approval the filters match (--risk, --skill-name, --requested-by, "
             "--created-after, --created-before), shown before you confirm.",
    )(command)  # fmt: skip


def _many(obj: Context, ids: tuple[str, ...], all_matching: bool, yes: bool,
          filters: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The filters to choose by (None: the ids); refuse a mix that says two things."""
    chosen = [f"--{k.replace('_', '-')}" for k, v in filters.items() if v is not None]
    if all_matching and ids:
        raise click.UsageError("name approval ids or --all-matching, not both")
    if not all_matching and not ids:
        raise click.UsageError("name an approval id (or several), or --all-matching")
    if chosen and not all_matching:
        raise click.UsageError(f"{', '.join(chosen)} choose approvals with --all-matching")
    if obj.as_json and not yes:
        raise click.UsageError("--json cannot ask for confirmation: add --yes")
    return filters if all_matching else None


@cli.command()
@click.argument("approval_ids", nargs=-1, type=APPROVAL_ID, metavar="[APPROVAL_ID]...")
@click.option("--approver", required=True, type=ACTOR, help="user:<id> of the person approving.")
@click.option(
    "--digest",
    type=DIGEST,
    help="The digest of the request you were shown (approvals show ID). With one id; "
    "without it, the current digest is shown and you confirm.",
)
@click.option("--reason", help="Why, for the requester and the auditors.")
@click.option(
    "--for", "for_member", type=PERSON, help="user:<id> whose delegation you decide under."
)
@many_options
@click.option(
    "--grant-hours", type=click.FloatRange(min=0, min_open=True),
    help="Also approve similar requests (same requester, kind, provider, destination) at once "
    "for this many hours (at most the workspace's [grants] max_hours).",
)  # fmt: skip
@click.option(
    "--grant-max-credits", type=click.FloatRange(min=0),
    help="With --grant-hours: the most credits each covered run may ask for (default: this "
    "request's ceiling).",
)  # fmt: skip
@click.option(
    "--grant-runs", type=click.IntRange(min=1),
    help="With --grant-hours: the most requests it covers per day (default: no count).",
)  # fmt: skip
@click.option(
    "--edits",
    type=JSON_OBJECT,
    help='Approve a narrower version, e.g. \'{"max_credits": 10, "proposed_payload": {...}}\'.',
)
@click.pass_obj
def approve(
    obj: Context,
    /,
    approval_ids: tuple[str, ...],
    approver: str,
    digest: str | None,
    reason: str | None,
    for_member: str | None,
    all_matching: bool,
    yes: bool,
    grant_hours: float | None,
    grant_max_credits: float | None,
    grant_runs: int | None,
    edits: dict[str, Any] | None,
    **filters: Any,
) -> None:
    """Approve a pending request (one vote where the workspace asks for a quorum).

    With --digest: the one APPROVAL_ID. Without it, or with several ids or --all-matching: shows
    each approval and its digest, asks "Approve N approvals? [y/N]", then approves each on its
    own and prints each one's result. --grant-hours (with --digest, one approval) also approves
    similar requests at once for a while.
    """
    if grant_hours is None and (grant_max_credits is not None or grant_runs is not None):
        raise click.UsageError("--grant-max-credits and --grant-runs go with --grant-hours")
    if digest is not None:
        if len(approval_ids) != 1 or all_matching:
            raise click.UsageError("--digest goes with one approval id; to approve several, leave "
                                   "it out and confirm the digests shown")  # fmt: skip
        grant = None
        if grant_hours is not None:
            grant = {"hours": grant_hours, "max_credits": grant_max_credits, "runs": grant_runs}
            grant = {k: v for k, v in grant.items() if v is not None}
        obj.command(
            "approve",
            {"approval_id": approval_ids[0], "approver": approver, "digest": digest,
             "reason": reason, "for_member": for_member, "grant": grant, "edits": edits},
        )  # fmt: skip
        return
    if grant_hours is not None or edits is not None:
        raise click.UsageError("--grant-hours and --edits go with one approval and its --digest")
    chosen_by = _many(obj, approval_ids, all_matching, yes, filters)
    decide = Decide(decision="approve", approver=approver, reason=reason, for_member=for_member)
    decide_many(obj, decide, approval_ids, chosen_by, yes)


@cli.command()
@click.argument("approval_ids", nargs=-1, type=APPROVAL_ID, metavar="[APPROVAL_ID]...")
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
@many_options
@click.pass_obj
def reject(
    obj: Context,
    /,
    approval_ids: tuple[str, ...],
    approver: str,
    reason: str | None,
    rerun: bool,
    for_member: str | None,
    all_matching: bool,
    yes: bool,
    **filters: Any,
) -> None:
    """Reject a pending request (one rejection rejects it).

    With one APPROVAL_ID it is rejected at once. With several, or --all-matching: shows them,
    asks "Reject N approvals? [y/N]", then rejects each on its own and prints each result.
    """
    if len(approval_ids) == 1 and not all_matching and not yes:
        if any(v is not None for v in filters.values()):
            raise click.UsageError("the filters choose approvals with --all-matching")
        obj.command(
            "reject",
            {"approval_id": approval_ids[0], "approver": approver, "reason": reason,
             "rerun": rerun, "for_member": for_member},
        )  # fmt: skip
        return
    chosen_by = _many(obj, approval_ids, all_matching, yes, filters)
    decide = Decide(decision="reject", approver=approver, reason=reason, rerun=rerun,
                    for_member=for_member)  # fmt: skip
    decide_many(obj, decide, approval_ids, chosen_by, yes)


@cli.command()
@click.argument("approval_id", type=APPROVAL_ID)
@click.option(
    "--message", required=True, help="Your answer, for the requester: what to ask or say first."
)
@click.option(
    "--by", "--approver", "approver", required=True, type=PERSON,
    help="Who answers: user:<id>, one who may approve it.",
)  # fmt: skip
@click.option(
    "--for", "for_member", type=PERSON, help="user:<id> whose delegation you decide under."
)
@click.pass_obj
def respond(obj: Context, approval_id: str, message: str, approver: str, for_member: str | None
            ) -> None:  # fmt: skip
    """Answer a pending request with a message instead of deciding it (it ends responded,
    and never runs): the requester reads your message as it would a rejection's reason."""
    obj.command(
        "respond",
        {"approval_id": approval_id, "approver": approver, "message": message,
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
