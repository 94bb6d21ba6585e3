"""The ``approvals`` command line. ``--json`` for machines, readable tables without it."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click
import msgspec
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from approvals.client import ApprovalsClient, ApprovalsError
from approvals.client.refusals import Refusals
from approvals.schemas.codec import encoder
from approvals.schemas.commands import Via
from approvals.schemas.subjects import IllegalToken
from approvals.services.cli import console
from approvals.services.cli.params import WORKSPACE
from approvals.services.dev import DEFAULT_NATS_PORT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from approvals.schemas.replies import AnyReply
    from approvals.schemas.subjects import CommandVerb

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
        except IllegalToken as error:
            # Options are checked as they are parsed; this is the backstop for any value that
            # still reaches a subject unchecked.
            console.fail(self.as_json, "invalid", str(error))
            code = self.error_exit
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
        from approvals.services.runtime.bus import connect_options
        from approvals.services.runtime.settings import Settings

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


class ApprovalsGroup(click.Group):
    """The root group: every usage mistake (a missing option, a malformed id, an illegal
    workspace) becomes one line on stderr, or the one error shape on stdout under --json, in
    place of click's several lines of usage that a script reading --json could not parse."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> click.Context:  # fmt: skip
        as_json = "--json" in args  # before parsing, which consumes the list
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as error:
            raise _refused(error, as_json) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            raise _refused(error, bool(ctx.params.get("as_json"))) from None


def _refused(error: click.ClickException, as_json: bool) -> click.exceptions.Exit:
    """Print ``error`` as one line (or the error shape); the exit that ends the command."""
    context = getattr(error, "ctx", None)
    message = error.format_message()
    if isinstance(error, click.UsageError) and context is not None:
        path = context.command_path
        message = f"{path}: {message} (see {path} --help)"
    console.fail(as_json, "invalid", message.replace("\n", " "))
    # A command whose exit codes mean outcomes (wait) says which one a mistake gets.
    return click.exceptions.Exit(
        getattr(context and context.command, "usage_exit", error.exit_code)
    )


@click.group(cls=ApprovalsGroup)
@click.option("--nats-url", envvar="NATS_URL", default=DEFAULT_NATS_URL, show_default=True,
              show_envvar=True, help="The NATS server the services listen on.")  # fmt: skip
@click.option(
    "--workspace", "-w", envvar="APPROVALS_WORKSPACE", default="default", show_default=True,
    show_envvar=True, type=WORKSPACE, help="The workspace to act in.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for a reply.")
@click.pass_context
def cli(ctx: click.Context, nats_url: str, workspace: str, as_json: bool, timeout: float) -> None:
    """Approvals: a human decision in front of automated actions that spend or write."""
    ctx.obj = Context(nats_url=nats_url, workspace=workspace, as_json=as_json, timeout=timeout)


def main() -> None:
    cli()


# The commands register themselves on the group when imported.
from approvals.services.cli import (  # noqa: E402, F401
    agent,
    audit,
    commands,
    grants,
    operate,
    passkeys,
    reads,
    receipts,
    reviews,
    workspaces,
)
