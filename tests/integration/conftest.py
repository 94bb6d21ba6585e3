"""The command service over a real nats-server, on each store backend."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.services.approvals.service import CommandService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from approvals.services.runtime.natsserver import NatsServer
    from approvals.services.runtime.settings import Settings

from tests.workspaces import configure_over_nats

Started = tuple[CommandService, ApprovalsClient]


@pytest.fixture
def command_settings(settings: Settings, nats_server: NatsServer) -> Settings:
    """The backend's settings, pointed at the test's nats-server."""
    return msgspec.structs.replace(settings, nats_url=nats_server.url)


@asynccontextmanager
async def running_commands(settings: Settings, workspace: str = "acme") -> AsyncIterator[Started]:
    """A started CommandService and a client of ``workspace`` connected to the same server."""
    async with CommandService(settings) as service:
        client = await ApprovalsClient.connect(settings.nats_url, workspace, reply_timeout=10.0)
        await configure_over_nats(client.nc)
        try:
            yield service, client
        finally:
            await client.close()


@pytest.fixture
def start_commands() -> Callable[..., AbstractAsyncContextManager[Started]]:
    """For a test that needs settings of its own: ``async with start_commands(settings)``."""
    return running_commands


@pytest.fixture
async def command_service(
    command_settings: Settings,
) -> AsyncIterator[Started]:
    async with running_commands(command_settings) as started:
        yield started
