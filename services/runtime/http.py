"""An ASGI app served by uvicorn inside a service's event loop (the gateway, the ops endpoints)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar import Litestar

# What a request still running at stop may take before uvicorn cancels it; long polls are
# answered at stop (the gateway's Bus), so only a stuck request ever meets this.
GRACEFUL_S = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take SIGINT/SIGTERM for itself: it would stop this server alone (waiting
        # for open long polls) and raise the signal again afterwards. The runner owns the signals
        # and stops every service in order (services.dev.run_until_stopped).
        yield


class Served:
    """``await start()`` returns once the port listens (or raises what stopped it)."""

    name = "http"

    def __init__(self, app: Litestar, host: str, port: int) -> None:
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                proxy_headers=False, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_S)  # fmt: skip
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        [listener] = self.server.servers[0].sockets if self.server.servers else [None]
        host, port = listener.getsockname()[:2] if listener else (None, None)
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name=self.name)
        deadline = asyncio.get_running_loop().time() + 30
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it (a port in use)
                raise RuntimeError(f"the {self.name} server stopped before it started")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the {self.name} server did not start within 30 s")
            await asyncio.sleep(0.01)  # uvicorn offers no start event to wait on

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
