"""The ``approvals`` command line. ``--json`` for machines, readable tables without it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from schemas.codec import encoder
from services import console
from services.client import ApprovalsClient
from services.dev import DEFAULT_NATS_PORT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from schemas.replies import AnyReply
    from schemas.subjects import CommandVerb

DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"


class Context(msgspec.Struct):
    nats_url: str
    workspace: str
    as_json: bool
    timeout: float

    def run(self, work: Callable[[ApprovalsClient], Awaitable[int]]) -> None:
        async def main() -> int:
            client = await ApprovalsClient.connect(self.nats_url, self.workspace, self.timeout)
            try:
                return await work(client)
            finally:
                await client.close()

        try:
            code = asyncio.run(main())
        except (OSError, TimeoutError) as error:
            console.fail(self.as_json, "unavailable", f"cannot reach {self.nats_url}: {error}")
            code = 1
        sys.exit(code)

    def command(self, verb: CommandVerb, body: dict[str, Any]) -> None:
        async def work(client: ApprovalsClient) -> int:
            reply = await client.send(verb, {k: v for k, v in body.items() if v is not None})
            return self.print_reply(reply)

        self.run(work)

    def print_reply(self, reply: AnyReply) -> int:
        if self.as_json:
            click.echo(encoder.encode(reply).decode())
        else:
            console.print_reply(reply)
        return 0 if reply.ok else 1


@click.group()
@click.option("--nats-url", envvar="NATS_URL", default=DEFAULT_NATS_URL, show_default=True)
@click.option(
    "--workspace", "-w", envvar="APPROVALS_WORKSPACE", default="default", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for a reply.")
@click.pass_context
def cli(ctx: click.Context, nats_url: str, workspace: str, as_json: bool, timeout: float) -> None:
    """Approvals: a human decision in front of automated actions that spend or write."""
    ctx.obj = Context(nats_url=nats_url, workspace=workspace, as_json=as_json, timeout=timeout)


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("var"), show_default=True)
@click.option("--nats-port", type=int, default=DEFAULT_NATS_PORT, show_default=True)
def dev(data_dir: Path, nats_port: int) -> None:
    """Run everything on the embedded default: nats-server, SQLite store, all services."""
    from services.dev import run_dev

    run_dev(data_dir, nats_port)


@cli.command()
@click.pass_obj
def serve(obj: Context) -> None:
    """Run the command service and relay against NATS_URL and the configured store."""
    from services.approvals.service import CommandService
    from services.dev import run_until_stopped
    from services.settings import Settings

    settings = Settings.from_env(nats_url=obj.nats_url)
    asyncio.run(run_until_stopped(CommandService(settings)))


@cli.command()
@click.option("--body", type=click.File("rb"), help="A whole request body as JSON ('-' for stdin).")
@click.option("--requested-by", default="user:" + (Path.home().name or "cli"), show_default=True)
@click.option("--on-behalf-of")
@click.option("--skill-name", default="cli")
@click.option("--skill-execution-id", default="cli")
@click.option("--title")
@click.option("--summary", default="")
@click.option(
    "--risk",
    "risk_level",
    default="medium",
    show_default=True,
    type=click.Choice(["low", "medium", "high", "critical"]),
)
@click.option("--kind", default="other", show_default=True)
@click.option(
    "--mode",
    default="live",
    show_default=True,
    type=click.Choice(["live", "dry_run", "smoke_test"]),
)
@click.option("--provider")
@click.option("--destination")
@click.option("--max-credits", type=float)
@click.option("--expected-credits", type=float)
@click.option("--payload", help="The proposed payload as JSON.")
@click.option("--idempotency-key")
@click.option("--trace-id")
@click.option("--expires-in", "expires_in_s", type=int, help="Seconds until it expires.")
@click.pass_obj
def request(obj: Context, /, body: Any, **fields: Any) -> None:
    """Ask for approval of an action."""
    if body is not None:
        obj.run(lambda client: _send_raw(obj, client, body.read()))
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
    obj.command("request", fields)


async def _send_raw(obj: Context, client: ApprovalsClient, payload: bytes) -> int:
    return obj.print_reply(await client.send_raw("request", payload))


@cli.command()
@click.argument("approval_id")
@click.option("--approver", required=True, help="user:<id> of the person approving.")
@click.option("--digest", required=True, help="The digest of the request you were shown.")
@click.option("--reason")
@click.pass_obj
def approve(obj: Context, approval_id: str, approver: str, digest: str, reason: str | None) -> None:
    """Approve a pending request."""
    obj.command(
        "approve",
        {"approval_id": approval_id, "approver": approver, "digest": digest, "reason": reason},
    )


@cli.command()
@click.argument("approval_id")
@click.option("--approver", required=True)
@click.option("--reason")
@click.option("--rerun", is_flag=True, help="Ask the caller to prepare a new request.")
@click.pass_obj
def reject(obj: Context, approval_id: str, approver: str, reason: str | None, rerun: bool) -> None:
    """Reject a pending request."""
    obj.command(
        "reject",
        {"approval_id": approval_id, "approver": approver, "reason": reason, "rerun": rerun},
    )


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
@click.pass_obj
def show(obj: Context, approval_id: str) -> None:
    """Show one approval, replayed from its events on the stream."""
    from services.approvals.domain import project

    async def work(client: ApprovalsClient) -> int:
        history = [event async for _, event in client.events(approval_id)]
        approval = project(None, history)
        if approval is None:
            console.fail(obj.as_json, "not_found", f"no approval {approval_id} in {obj.workspace}")
            return 1
        console.print_approval(obj.as_json, approval, history)
        return 0

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


@cli.group()
def schema() -> None:
    """The JSON Schema of every message."""


@schema.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
def schema_export(directory: Path) -> None:
    """Write one JSON Schema file per message into DIRECTORY."""
    from schemas.export import export

    for path in export(directory):
        click.echo(str(path))


def main() -> None:
    cli()
