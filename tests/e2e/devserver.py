"""``approvals dev`` as a child process, for the tests that meet the system as a developer or
a browser does."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

APPROVALS = str(Path(sys.executable).parent / "approvals")
EXAMPLE = str(Path(__file__).parents[2] / "schemas" / "examples" / "workspace.toml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Dev:
    """``approvals dev`` as a child process in a session of its own (it starts nats-server)."""

    def __init__(
        self, data_dir: Path, port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        self.log = log
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [APPROVALS, "dev", "--data-dir", str(data_dir), "--nats-port", str(port)],
                cwd=data_dir.parent,
                env={**os.environ, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_line(self, prefix: str, within_s: float = 60.0) -> str:
        """The first line from now on that starts with ``prefix``; fail at the deadline."""
        deadline = time.monotonic() + within_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"approvals dev exited before {prefix!r}:\n{self.diagnostics()}")
            self.output.append(line)
            if line.startswith(prefix):
                return line
        pytest.fail(f"approvals dev printed no {prefix!r} in {within_s} s:\n{self.diagnostics()}")

    def interrupt(self, within_s: float = 15.0) -> int:
        """Ctrl-C: SIGINT to dev alone, then its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(within_s)

    def diagnostics(self) -> str:
        return "\n".join(self.output) + "\n--- stderr ---\n" + self.log.read_text()[-4000:]

    def kill(self) -> None:
        """Teardown: stop it if it still runs, then kill whatever is left of its session."""
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.interrupt()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait()
