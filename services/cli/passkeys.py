"""``approvals passkeys``: the workspace's registered passkeys (an export verifiers check
assertions against offline) and removing one. Registering happens in the web inbox, where the
browser holds the authenticator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import msgspec

from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.passkeys import PasskeysExport
from approvals.services.cli import Context, cli, console
from approvals.services.cli.params import PERSON

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient

_export = msgspec.json.Decoder(PasskeysExport)


async def fetch_export(client: ApprovalsClient, member: str | None = None) -> PasskeysExport:
    """The workspace's registered passkeys, as the command service holds them."""
    data = await client.query("passkeys", {"member": member} if member else {})
    if error := reply_error(data):
        raise click.ClickException(f"[{error.code}] {error.message}")
    return _export.decode(data)


@cli.group(invoke_without_command=True)
@click.option("--member", type=PERSON, help="Only this member's passkeys.")
@click.pass_context
def passkeys(ctx: click.Context, member: str | None) -> None:
    """The workspace's registered passkeys (members register them in the web inbox)."""
    if ctx.invoked_subcommand is None:
        _export_command(ctx.obj, member)


@passkeys.command("export")
@click.option("--member", type=PERSON, help="Only this member's passkeys.")
@click.pass_obj
def export_command(obj: Context, member: str | None) -> None:
    """Every registered passkey with its public key, as JSON: what `approvals verify --passkeys`
    checks a receipt's assertions against without asking the service."""
    _export_command(obj, member, always_json=True)


def _export_command(obj: Context, member: str | None, always_json: bool = False) -> None:
    async def work(client: ApprovalsClient) -> int:
        export = await fetch_export(client, member)
        if obj.as_json or always_json:
            click.echo(encoder.encode(export))
            return 0
        for key in export.passkeys:
            click.echo(console.table([
                ("member", key.member), ("name", key.name or "—"),
                ("credential", key.credential_id), ("registered", key.registered_at.isoformat()),
                ("removed", key.removed_at.isoformat() if key.removed_at else None),
            ]))  # fmt: skip
        if not export.passkeys:
            click.echo("no passkeys registered")
        return 0

    obj.run(work)


@passkeys.command("remove")
@click.argument("credential_id")
@click.option("--by", required=True, type=PERSON, help="Its member, or an admin.")
@click.option("--reason", help="Why, for the auditors.")
@click.pass_obj
def remove_command(obj: Context, credential_id: str, by: str, reason: str | None) -> None:
    """Remove a passkey: from now on it signs nothing (a lost device)."""
    obj.command("remove_passkey", {"credential_id": credential_id, "by": by, "reason": reason})
