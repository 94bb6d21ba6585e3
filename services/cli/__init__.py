"""The ``approvals`` command line. ``--json`` for machines, readable tables without it."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click
import msgspec
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from schemas.codec import encoder
from schemas.commands import Via
from services import console
from services.client import ApprovalsClient, ApprovalsError
from services.dev import DEFAULT_NATS_PORT
from services.refusals import Refusals

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from schemas.replies import AnyReply
    from schemas.subjects import CommandVerb

DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
CLI_VIA = Via(channel="cli", auth="nats")  # recorded on the events of the CLI's commands


class Context(msgspec.Struct):
    nats_url: str
    workspace: str
    as_json: bool
    timeout: float
    error_exit: int = 1  # the exit code when the bus or the service cannot be reached

    def run(self, work: Callable[[ApprovalsClient], Awaitable[int]]) -> None:
        async def main() -> int:
            refusals = Refusals()  # a subject this user may not use: forbidden, not a timeout
            client = await self.connect(refusals=refusals)
            try:
                return await refusals.guard(work(client))
            finally:
                await client.close()

        try:
            code = asyncio.run(main())
        except ApprovalsError as error:
            console.fail(self.as_json, error.code, error.message)
            code = self.error_exit
        except NoRespondersError:
            console.fail(self.as_json, "unavailable", f"no service answers on {self.nats_url}")
            code = self.error_exit
        except (OSError, TimeoutError, NatsError) as error:
            console.fail(self.as_json, "unavailable", f"cannot reach {self.nats_url}: {error!r}")
            code = self.error_exit
        sys.exit(code)

    async def connect(
        self, workspace: str | None = None, *, refusals: Refusals | None = None
    ) -> ApprovalsClient:
        """A client of ``workspace`` (default: --workspace) that fails at once when the bus is
        unreachable, rather than retrying for minutes."""
        return await ApprovalsClient.connect(
            self.nats_url, workspace or self.workspace, self.timeout, via=CLI_VIA,
            reconnect=False, options=self.bus_options(), refusals=refusals,
        )  # fmt: skip

    def bus_options(self) -> dict[str, Any]:
        """Credentials and TLS from the environment (APPROVALS_NATS_*), as for the services."""
        from services.bus import connect_options
        from services.settings import Settings

        return connect_options(Settings.from_env())

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


def main() -> None:
    cli()


# The commands register themselves on the group when imported.
from services.cli import (  # noqa: E402, F401
    agent,
    audit,
    commands,
    operate,
    reads,
    receipts,
    reviews,
    workspaces,
)
