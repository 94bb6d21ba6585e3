"""Commands: request, check, approve, reject, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from services.cli import Context, cli

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas.subjects import CommandVerb
    from services.client import ApprovalsClient


def request_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a request, shared by ``request`` and ``check``."""
    for option in reversed(_REQUEST_OPTIONS):
        command = option(command)
    return command


_REQUEST_OPTIONS = [
    click.option(
        "--body", type=click.File("rb"), help="A whole request body as JSON ('-' for stdin)."
    ),
    click.option(
        "--requested-by", default="user:" + (Path.home().name or "cli"), show_default=True
    ),
    click.option("--on-behalf-of"),
    click.option("--skill-name", default="cli"),
    click.option("--skill-execution-id", default="cli"),
    click.option("--title"),
    click.option("--summary", default=""),
    click.option(
        "--risk",
        "risk_level",
        default="medium",
        show_default=True,
        type=click.Choice(["low", "medium", "high", "critical"]),
    ),
    click.option("--kind", default="other", show_default=True),
    click.option(
        "--mode",
        default="live",
        show_default=True,
        type=click.Choice(["live", "dry_run", "smoke_test"]),
    ),
    click.option("--provider"),
    click.option("--destination"),
    click.option("--max-credits", type=float),
    click.option("--expected-credits", type=float),
    click.option("--payload", help="The proposed payload as JSON."),
    click.option("--idempotency-key"),
    click.option("--trace-id"),
    click.option("--expires-in", "expires_in_s", type=int, help="Seconds until it expires."),
]


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
    if not fields["title"]:
        raise click.UsageError("--title is required (or give a whole body with --body)")
    action = {
        "kind": fields.pop("kind"),
        "mode": fields.pop("mode"),
        "provider": fields.pop("provider"),
        "destination": fields.pop("destination"),
        "max_credits": fields.pop("max_credits"),
        "expected_credits": fields.pop("expected_credits"),
    }
    payload = fields.pop("payload")
    fields["proposed_payload"] = json.loads(payload) if payload else None
    fields["action"] = {k: v for k, v in action.items() if v is not None}
    obj.command(verb, fields)


async def _send_raw(obj: Context, client: ApprovalsClient, verb: CommandVerb, data: bytes) -> int:
    return obj.print_reply(await client.send_raw(verb, data))


@cli.command()
@click.argument("approval_id")
@click.option("--approver", required=True, help="user:<id> of the person approving.")
@click.option("--digest", required=True, help="The digest of the request you were shown.")
@click.option("--reason")
@click.option("--for", "for_member", help="user:<id> whose delegation you decide under.")
@click.pass_obj
def approve(
    obj: Context,
    approval_id: str,
    approver: str,
    digest: str,
    reason: str | None,
    for_member: str | None,
) -> None:
    """Approve a pending request (one vote where the workspace asks for a quorum)."""
    obj.command(
        "approve",
        {"approval_id": approval_id, "approver": approver, "digest": digest, "reason": reason,
         "for_member": for_member},
    )  # fmt: skip


@cli.command()
@click.argument("approval_id")
@click.option("--approver", required=True)
@click.option("--reason")
@click.option("--rerun", is_flag=True, help="Ask the caller to prepare a new request.")
@click.option("--for", "for_member", help="user:<id> whose delegation you decide under.")
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
@click.argument("approval_id")
@click.option("--by", required=True, help="Who cancels: user:<id> or service:<name>.")
@click.option("--reason")
@click.pass_obj
def cancel(obj: Context, approval_id: str, by: str, reason: str | None) -> None:
    """Cancel a pending request."""
    obj.command("cancel", {"approval_id": approval_id, "by": by, "reason": reason})


@cli.command()
@click.argument("approval_id")
@click.option("--digest", required=True, help="The digest of the action about to run.")
@click.option("--executor", required=True, help="Who runs it: service:<name> or user:<id>.")
@click.pass_obj
def redeem(obj: Context, approval_id: str, digest: str, executor: str) -> None:
    """Claim an approved action just before running it: once, in time, the same digest."""
    obj.command("redeem", {"approval_id": approval_id, "digest": digest, "executor": executor})


@cli.command()
@click.argument("approval_id")
@click.option("--credits-used", required=True, type=float)
@click.option("--outcome", required=True, type=click.Choice(["succeeded", "failed", "partial"]))
@click.option("--summary", default="")
@click.option("--external-ref", "external_refs", multiple=True, help="Repeat for each.")
@click.option("--by", required=True, help="Who ran it.")
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
