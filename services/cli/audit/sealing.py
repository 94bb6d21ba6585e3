"""The audit commands of tamper evidence: verify the log against its hash chains and the signed
checkpoints, and fetch the checkpoints to keep beside an export."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
import nats

from approvals.schemas.audit import Checkpoint, Problem
from approvals.schemas.codec import encoder
from approvals.services.approvals.checkpointer import checkpoint_decoder
from approvals.services.approvals.notification_log import store_sections
from approvals.services.audit.checkpoints import all_checkpoints, check_checkpoints
from approvals.services.audit.source import bulk, export_sections
from approvals.services.audit.verify import Verifier
from approvals.services.cli.audit import Refused, audit, emit, open_store, progress, rendering, run
from approvals.services.cli.receipts import _offline_keys

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient
    from approvals.schemas.audit import Verification
    from approvals.services.cli import Context


@audit.command("verify")
@click.option(
    "--export",
    "export_file",
    type=click.Path(exists=True, path_type=Path, dir_okay=False),
    help="Verify this export (`audit export`) instead of the store.",
)
@click.option(
    "--checkpoints",
    "checkpoints_file",
    type=click.Path(exists=True, path_type=Path, dir_okay=False),
    help="Checkpoints saved by `audit checkpoints` (default: from the stream).",
)
@click.option("--no-checkpoints", is_flag=True, help="Check the hash chains only.")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="The signing public key (as `approvals keys` prints it): no bus needed.",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, path_type=Path),
    help="The output of `approvals keys --json`.",
)
@click.pass_obj
def verify_command(
    obj: Context,
    export_file: Path | None,
    checkpoints_file: Path | None,
    no_checkpoints: bool,
    public_keys: tuple[str, ...],
    keys_file: Path | None,
) -> None:
    """Recompute every event's hash chain and the log hash, and check them against the signed
    checkpoints; name the first event that does not match. Exits 1 when something does not."""

    def work() -> int:
        checkpoints: list[Checkpoint] = []
        refused: list[tuple[Checkpoint, str]] = []
        if not no_checkpoints:
            try:
                keys = _offline_keys(public_keys, keys_file)
            except ValueError as error:
                raise Refused("invalid", str(error)) from None
            checkpoints, keys = asyncio.run(_checkpoints_and_keys(obj, checkpoints_file, keys))
            checkpoints, refused = check_checkpoints(checkpoints, keys)
        verifier = Verifier(checkpoints)
        read_into(verifier, export_file)
        result = verifier.finish("export" if export_file else "store")
        result = with_refused(result, refused)
        emit(obj, result, rendering.verify_text(result, no_checkpoints))
        return 0 if result.ok else 1

    run(obj, work)


def read_into(verifier: Verifier, export_file: Path | None) -> None:
    """Feed the whole log to ``verifier``: the export's, or the store's."""
    with bulk():
        if export_file is not None:
            with export_file.open("rb") as lines:
                try:
                    for rows in export_sections(lines):
                        verifier.feed(rows)
                except ValueError as error:
                    raise Refused("invalid", f"{export_file}: {error}") from None
        else:
            with open_store() as app:
                total = app.last_notification_id()
                for section in progress("verifying", total, store_sections(app)):
                    verifier.feed(section)


def with_refused(result: Verification, refused: list[tuple[Checkpoint, str]]) -> Verification:
    """The verification, failed by the checkpoints whose signature does not hold (the first
    problem stays the earliest in the log)."""
    if not refused:
        return result
    first_bad = Problem(
        code="checkpoint_invalid",
        position=refused[0][0].position,
        message=f"a checkpoint's signature does not hold: {refused[0][1]}",
    )
    first = result.first_problem
    return msgspec.structs.replace(
        result,
        ok=False,
        problems=result.problems + len(refused),
        first_problem=first if first and first.position <= first_bad.position else first_bad,
    )


async def _checkpoints_and_keys(
    obj: Context, checkpoints_file: Path | None, keys: Any
) -> tuple[list[Checkpoint], Any]:

    found: list[Checkpoint] = []
    if checkpoints_file is not None:
        text = await asyncio.to_thread(checkpoints_file.read_bytes)
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    found.append(checkpoint_decoder.decode(line))
                except msgspec.DecodeError as error:
                    raise Refused("invalid", f"{checkpoints_file} line {number}: {error}") from None
        if keys is not None:
            return found, keys
    try:
        client = await obj.connect()
    except (OSError, TimeoutError, nats.errors.Error) as error:
        raise Refused(
            "unavailable",
            f"cannot reach {obj.nats_url} for the checkpoints and keys "
            f"({error!r}): pass --checkpoints and --public-key, or --no-checkpoints",
        ) from None
    try:
        if checkpoints_file is None:
            found = await all_checkpoints(client.nc)
        return found, keys if keys is not None else list(await client.keys())
    except (nats.errors.Error, TimeoutError) as error:
        raise Refused(
            "unavailable",
            f"the command service did not give its public keys ({error!r}): "
            "pass --public-key or --keys",
        ) from None
    finally:
        await client.close()


@audit.command("checkpoints")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write them here as JSON Lines (default: stdout).",
)
@click.pass_obj
def checkpoints_command(obj: Context, output: Path | None) -> None:
    """The signed checkpoints published on approvals.audit.checkpoints, oldest first: keep them
    with an export to verify it offline."""

    async def work(client: ApprovalsClient) -> int:
        found = await all_checkpoints(client.nc)
        data = b"".join(encoder.encode(c) + b"\n" for c in found)
        if output is not None:
            await asyncio.to_thread(output.write_bytes, data)
            click.echo(f"{len(found)} checkpoints written to {output}", err=True)
        elif obj.as_json:
            sys.stdout.buffer.write(data)
        else:
            click.echo(rendering.checkpoints_text(found))
        return 0

    obj.run(work)
