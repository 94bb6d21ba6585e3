"""Stopping ``approvals dev`` (and ``make run``) with Ctrl-C: prompt while long polls are open,
quiet (exit 0, no traceback), and a restart finds everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest

from tests.e2e.devserver import APPROVALS, Dev, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).parents[2]
STOP_WITHIN_S = 15.0  # generous: the bound is a deadline to fail at, not a speed claim


class Ports:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nats = free_port()
        self.gateway = free_port()
        self.base = f"http://127.0.0.1:{self.gateway}"
        self.env = {
            "APPROVALS_GATEWAY_PORT": str(self.gateway),
            "APPROVALS_OPS_PORT": str(free_port()),
            "APPROVALS_WEB_URL": self.base,
        }
        self.url = f"nats://127.0.0.1:{self.nats}"


@pytest.fixture
def ports(tmp_path: Path) -> Ports:
    return Ports(tmp_path)


@pytest.fixture
def dev(ports: Ports) -> Iterator[Callable[[], Dev]]:
    started: list[Dev] = []

    def start() -> Dev:
        log = ports.root / f"dev-{len(started)}.log"
        process = Dev(ports.root / "data", ports.nats, log, env=ports.env)
        started.append(process)
        process.wait_for_line("ready")
        return process

    yield start
    for process in started:
        process.kill()


def cli(ports: Ports, *args: str) -> Any:
    done = subprocess.run([APPROVALS, "--nats-url", ports.url, "-w", "default", "--json", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def pending_approval(ports: Ports) -> str:
    reply = cli(ports, "request", "--title", "Sync 40 contacts", "--kind", "crm_write",
                "--requested-by", "service:agent")  # fmt: skip
    assert reply["outcome"] == "approval_required", reply
    return str(reply["approval"]["id"])


class WaitQueries:
    """Sees the ``wait`` queries on the bus (a plain subscriber beside the projection's queue
    group, answering nothing): a long poll is open once its query is seen."""

    def __init__(self, url: str) -> None:
        self.seen = threading.Semaphore(0)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(url),), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "no connection to the dev bus"

    async def _run(self, url: str) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        nc = await nats.connect(url, max_reconnect_attempts=0)

        async def on_wait(_: Any) -> None:
            self.seen.release()

        await nc.subscribe("approvals.query.*.wait", cb=on_wait)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def expect(self, count: int, within_s: float = 30.0) -> None:
        for _ in range(count):
            assert self.seen.acquire(timeout=within_s), "the long poll never reached the bus"

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def long_poll(url: str, headers: dict[str, str]) -> tuple[threading.Thread, list[Any]]:
    """GET ``url`` in a thread; its outcome (a response or the error) lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(httpx.get(url, headers=headers, timeout=200))
        except httpx.HTTPError as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def quiet_stop(process: Dev) -> None:
    """It exits 0 within the deadline, printing no traceback."""
    try:
        code = process.process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"approvals dev still runs {STOP_WITHIN_S} s after Ctrl-C")
    assert code == 0, process.diagnostics()
    assert "Traceback" not in process.log.read_text(), process.diagnostics()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_answers_open_long_polls_and_stops_promptly(
    dev: Callable[[], Dev], ports: Ports
) -> None:
    first = dev()
    approval_id = pending_approval(ports)
    key = cli(ports, "keys", "create", "--as", "service:agent", "--by", "user:admin")["key"]
    waits = WaitQueries(ports.url)
    try:
        # Check: a long poll over HTTP and one over NATS (the CLI) are both open.
        path = f"/v1/workspaces/default/approvals/{approval_id}/wait?timeout_s=120"
        http, outcome = long_poll(ports.base + path, {"Authorization": f"Bearer {key}"})
        over_nats = subprocess.Popen(
            [APPROVALS, "--nats-url", ports.url, "-w", "default", "--json", "wait", approval_id,
             "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        waits.expect(2)
    finally:
        waits.close()

    # Check: Ctrl-C stops it within the deadline, quietly, and answers both polls.
    first.process.send_signal(signal.SIGINT)
    quiet_stop(first)
    http.join(STOP_WITHIN_S)
    [answer] = outcome
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    out, err = over_nats.communicate(timeout=STOP_WITHIN_S)
    assert over_nats.returncode == 4, (out, err)  # the CLI's code for an error reply
    assert json.loads(out)["error"]["code"] == "unavailable"

    # Check: started again on the same data, the approval is there, still pending.
    dev()
    shown = cli(ports, "show", approval_id)
    assert shown["approval"]["status"] == "pending"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_to_the_whole_process_group_stops_quietly(
    dev: Callable[[], Dev], ports: Ports
) -> None:
    first = dev()
    approval_id = pending_approval(ports)
    # Check: a terminal's Ctrl-C reaches every process of the group, nats-server too.
    os.killpg(first.process.pid, signal.SIGINT)
    quiet_stop(first)
    first.wait_for_line("stopped", within_s=5)
    # Check: a restart finds the approval.
    dev()
    assert cli(ports, "show", approval_id)["approval"]["status"] == "pending"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_run_stops_quietly_on_ctrl_c(ports: Ports) -> None:
    flags = f"--data-dir {ports.root / 'data'} --nats-port {ports.nats}"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"BIN={Path(sys.executable).parent}", "STAMP=",
         f"DEV_FLAGS={flags}"],
        cwd=REPO, env={**os.environ, **ports.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert make.stdout is not None
        for line in make.stdout:
            if line.startswith("ready"):
                break
        else:
            pytest.fail("make run ended before it was ready: " + make.stderr.read())  # type: ignore[union-attr]
        # Check: Ctrl-C in the terminal: SIGINT to make, approvals dev and nats-server at once.
        os.killpg(make.pid, signal.SIGINT)
        out, err = make.communicate(timeout=STOP_WITHIN_S)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    assert "stopped" in out
    assert "Traceback" not in err, err
    assert "Error" not in err, err  # make's "*** [run] Error 1": approvals dev exited non-zero
