"""``approvals mcp``: the MCP server for agents (services/agent)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from approvals.services.cli import Context, cli

if TYPE_CHECKING:
    from approvals.services.agent.doors import Door


@cli.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True, help="stdio (the client starts this process) or streamable "
              "HTTP (served at http://HOST:PORT/mcp).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="With --transport http.")
@click.option("--port", type=int, default=8765, show_default=True, help="With --transport http.")
@click.option("--as", "actor", envvar="APPROVALS_MCP_AS", required=True, show_envvar=True,
              help="Who the agent requests as, e.g. service:enricher.")  # fmt: skip
@click.option("--api-url", envvar="APPROVALS_MCP_API_URL", show_envvar=True,
              help="The gateway's address: use its HTTP API with the API key in "
              "APPROVALS_MCP_API_KEY instead of the bus.")  # fmt: skip
@click.pass_obj
def mcp(
    obj: Context, transport: str, host: str, port: int, actor: str, api_url: str | None
) -> None:
    """Serve the approval gate to AI agents as MCP tools (no tool decides).

    Over the bus with this process's NATS credentials (APPROVALS_NATS_*, as a workspace caller),
    or over the gateway's HTTP API with an API key of ACTOR (--api-url, APPROVALS_MCP_API_KEY)."""
    import os

    from approvals.client import ApprovalsClient
    from approvals.services.agent.doors import ApiDoor, BusDoor
    from approvals.services.agent.server import build
    from approvals.services.runtime.settings import Settings

    api_key = os.environ.get("APPROVALS_MCP_API_KEY")
    if api_url and not api_key:
        raise click.UsageError("--api-url needs the API key in APPROVALS_MCP_API_KEY")

    async def door() -> Door:
        if api_url:
            assert api_key is not None
            return ApiDoor(api_url, obj.workspace, api_key, timeout_s=obj.timeout)
        from approvals.services.runtime.bus import connect_options

        client = await ApprovalsClient.connect(
            obj.nats_url, obj.workspace, obj.timeout,
            options=connect_options(Settings.from_env()),
        )  # fmt: skip
        return BusDoor(client)

    from approvals.services.runtime import tracing

    tracing.configure("approvals-mcp")  # OTEL_EXPORTER_OTLP_ENDPOINT set: tool calls are traced
    server, close = build(door, actor)

    async def serve() -> None:
        try:
            if transport == "stdio":
                await server.run_stdio_async()
            else:
                await server.run_streamable_http_async(host=host, port=port)
        finally:
            await close()
            tracing.shutdown()

    asyncio.run(serve())
