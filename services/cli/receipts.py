"""Receipts: ``approvals keys`` and ``approvals verify RECEIPT``."""

from __future__ import annotations

import hashlib
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from approvals.schemas import codec
from approvals.schemas.codec import encoder
from approvals.schemas.passkeys import PasskeysExport
from approvals.schemas.receipts import KeysReply, PublicKey, Receipt
from approvals.schemas.signatures import ReceiptInvalid, key_id_of, unb64, verify
from approvals.services.audit.passkeys import check_receipt
from approvals.services.cli import Context, cli, console
from approvals.services.cli.params import ACTOR, KEY_ID, PERSON

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient


@cli.group(invoke_without_command=True)
@click.pass_context
def keys(ctx: click.Context) -> None:
    """The public keys receipts are signed with; with create or revoke, the workspace's API keys."""
    if ctx.invoked_subcommand is None:
        _signing_keys(ctx.obj)


@keys.command("create")
@click.option("--as", "actor", required=True, type=ACTOR, help="The member the key acts as.")
@click.option("--by", required=True, type=PERSON, help="An admin of the workspace.")
@click.option("--name", default="", help="What the key is for.")
@click.pass_obj
def create_key(obj: Context, actor: str, by: str, name: str) -> None:
    """Create an API key for the HTTP API; it is shown once and only its hash is kept."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    body = {"key_id": key_id, "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "actor": actor, "name": name, "by": by}  # fmt: skip
    key = f"apk_{key_id}.{secret}"

    async def work(client: ApprovalsClient) -> int:
        reply = await client.send("create_api_key", body)
        if not reply.ok:
            return obj.print_reply(reply)
        if obj.as_json:
            click.echo(encoder.encode({"ok": True, "key_id": key_id, "actor": actor, "key": key}))
        else:
            click.echo(console.table([("key id", key_id), ("acts as", actor),
                                      ("workspace", client.workspace), ("key", key)]))  # fmt: skip
            click.echo("Keep the key now: it is not stored and cannot be shown again.")
        return 0

    obj.run(work)


@keys.command("revoke")
@click.argument("key_id", type=KEY_ID)
@click.option("--by", required=True, type=PERSON, help="An admin of the workspace.")
@click.pass_obj
def revoke_key(obj: Context, key_id: str, by: str) -> None:
    """Revoke an API key (the gateway refuses it within seconds)."""
    obj.command("revoke_api_key", {"key_id": key_id, "by": by})


def _signing_keys(obj: Context) -> None:
    async def work(client: ApprovalsClient) -> int:
        found = await client.keys()
        if obj.as_json:
            click.echo(encoder.encode(KeysReply(keys=found)))
        else:
            for key in found:
                click.echo(console.table([("key id", key.key_id), ("algorithm", key.algorithm),
                                          ("public key", key.public_key)]))  # fmt: skip
        return 0

    obj.run(work)


@cli.command("verify")
@click.argument("receipt")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="A public key (base64url, as `approvals keys` prints it): verify offline.",
)
@click.option("--keys", "keys_file", type=click.Path(exists=True, path_type=Path),
              help="The output of `approvals keys --json`: verify offline.")  # fmt: skip
@click.option("--passkeys", "passkeys_file", type=click.Path(exists=True, path_type=Path),
              help="The output of `approvals passkeys export`: check the approvers' passkey "
              "assertions offline.")  # fmt: skip
@click.pass_obj
def verify_command(
    obj: Context, receipt: str, public_keys: tuple[str, ...], keys_file: Path | None,
    passkeys_file: Path | None,
) -> None:  # fmt: skip
    """Check who approved exactly what: RECEIPT is a file, - for stdin, or the JSON itself.

    The JSON may be the receipt or anything holding it (`approvals --json show ID`). Without
    --public-key or --keys the service's keys are asked for. A receipt that carries the
    approvers' passkey assertions is also checked against their registered credentials
    (--passkeys, or the service's export when verifying online)."""
    try:
        signed = _receipt(receipt)
        offline = _offline_keys(public_keys, keys_file)
        export = _passkeys(passkeys_file)
    except ValueError as error:
        console.fail(obj.as_json, "invalid", str(error))
        sys.exit(1)
    if offline is not None:
        sys.exit(_verify(obj, signed, offline, export))

    async def work(client: ApprovalsClient) -> int:
        found = export
        if found is None and signed.passkeys:
            from approvals.services.cli.passkeys import fetch_export

            found = await fetch_export(client)
        return _verify(obj, signed, list(await client.keys()), found)

    obj.run(work)


def _passkeys(path: Path | None) -> PasskeysExport | None:
    if path is None:
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=PasskeysExport)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"{path} is not the output of `approvals passkeys export`: "
                         f"{error}") from None  # fmt: skip


def _verify(
    obj: Context, receipt: Receipt, keys: list[PublicKey], export: PasskeysExport | None = None
) -> int:
    try:
        body = verify(receipt, keys)
    except ReceiptInvalid as error:
        console.fail(obj.as_json, "receipt_invalid", str(error))
        return 1
    if body.passkeys and export is None:
        console.fail(obj.as_json, "invalid", "the receipt carries the approvers' passkey "
                     "assertions: give --passkeys (the output of `approvals passkeys export`) "
                     "to check them offline")  # fmt: skip
        return 1
    checked = check_receipt(body, export.passkeys if export else ())
    if failed := next((c for c in checked if c.reason is not None), None):
        message = f"{failed.member}'s passkey does not sign this decision: {failed.message}"
        details: dict[str, object] = {"reason": failed.reason, "member": failed.member,
                   "credential_id": failed.credential_id}  # fmt: skip
        if obj.as_json:
            click.echo(codec.encode_error("passkey_invalid", message, details))
        else:
            click.echo(f"error [passkey_invalid: {failed.reason}]: {message}", err=True)
        return 1
    signers = [{"member": c.member, "credential_id": c.credential_id, "valid": True}
               for c in checked]  # fmt: skip
    if obj.as_json:
        click.echo(encoder.encode({"ok": True, "valid": True, "receipt": body,
                                   "passkeys": signers}))  # fmt: skip
        return 0
    click.echo(console.table([
        ("valid", f"yes, signed by key {body.key_id}"), ("workspace", body.workspace_id),
        ("approval", body.approval_id), ("digest", body.digest),
        *([("requested digest", body.requested_digest)]
          if body.requested_digest not in (None, body.digest) else []),
        ("credit ceiling", None if body.max_credits is None else f"{body.max_credits:g}"),
        ("approved by", ", ".join(body.approvers)), ("approved at", body.approved_at.isoformat()),
        ("redeem by", body.redeem_by.isoformat()), ("expires", body.expires_at.isoformat()),
        *([("passkeys", ", ".join(f"{c.member} (valid)" for c in checked))] if checked else []),
    ]))  # fmt: skip
    return 0


def _receipt(argument: str) -> Receipt:
    if argument == "-":
        text = sys.stdin.read()
    elif argument.lstrip().startswith("{"):
        text = argument
    else:
        path = Path(argument)
        if not path.is_file():
            raise ValueError(f"{argument} is neither a file nor a JSON receipt")
        text = path.read_text(encoding="utf-8")
    try:
        document: Any = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise ValueError(f"the receipt is not JSON: {error}") from None
    # The receipt itself, or a reply or view that carries it.
    for key in ("approval", "receipt"):
        if isinstance(document, dict) and isinstance(document.get(key), dict):
            document = document[key]
    try:
        return msgspec.convert(document, Receipt, strict=False)
    except msgspec.ValidationError as error:
        raise ValueError(f"not a receipt: {error}") from None


def _offline_keys(public_keys: tuple[str, ...], keys_file: Path | None) -> list[PublicKey] | None:
    if not public_keys and keys_file is None:
        return None
    found: list[PublicKey] = []
    if keys_file is not None:
        try:
            found.extend(msgspec.json.decode(keys_file.read_bytes(), type=KeysReply).keys)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise ValueError(f"{keys_file} is not the output of `approvals keys --json`: "
                             f"{error}") from None  # fmt: skip
    for text in public_keys:
        try:
            public = Ed25519PublicKey.from_public_bytes(unb64(text))
        except ValueError as error:
            raise ValueError(f"not an Ed25519 public key: {error}") from None
        found.append(PublicKey(key_id=key_id_of(public), public_key=text))
    return found
