"""End-to-end benchmark of `request` commands, against the raw eventsourcing SQLite save rate.

    .venv/bin/python benchmarks/bench_requests.py [--seconds 5] [--clients 50] [--json]

One run, about 3 x --seconds plus ~10 s of set-up, all on 127.0.0.1, everything in a temporary
directory that is removed at the end:

1. baseline: an ``Approvals`` application on our store configuration (SQLite file, WAL,
   ``synchronous=FULL``) saves one ``Requested`` event per ``save()``, sequentially, for --seconds;
2. a real nats-server (free port) and ``approvals serve --only commands`` in its own process
   (fresh SQLite file), so the load generator never shares the service's event loop;
3. ``request`` commands over NATS with 1 client, then with --clients concurrent clients. A request
   counts when its reply is ``ok`` *and* its event is on the stream ``APPROVALS_EVENTS``: after
   the last reply the benchmark waits until the stream holds as many messages as the store holds
   events; that wait is the relay's catch-up time, and the end-to-end rate is
   ``requests / (load time + catch-up)``.

See benchmarks/README.md for what every column means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import msgspec
import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from approvals.schemas.codec import command_decoders
from approvals.schemas.subjects import STREAM, command
from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.approvals import domain
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.store import store_env
from approvals.services.dev import bootstrap_workspace
from approvals.services.runtime.natsserver import NatsServer, nats_server_binary
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.connection import Connection

    from nats.aio.client import Client

WORKSPACE = "bench"
SUBJECT = command(WORKSPACE, "request")
# Every successful reply to a new request starts like this (Reply's first two fields).
OK_PREFIX = b'{"ok":true,"outcome":"approval_required"'
REQUEST_TIMEOUT_S = 10.0
CATCH_UP_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
# The clock for everything: CLOCK_MONOTONIC on Linux, so stamps compare across processes.
clock = time.monotonic

# The benchmark's workspace: the requester asks, ana approves, one approval at every risk level.
BENCH_WORKSPACE = WorkspaceSettings(
    members={
        "user:admin": Member(roles=("admin",)),
        "service:bench": Member(roles=("requester",)),
        "user:ana": Member(roles=("approver",)),
    }
)

# A live provider call: needs approval, so every request stores exactly one `Requested` event.
# No idempotency key; `skill_execution_id` makes every body unique.
_ID = "@@ID@@"
REQUEST_BODY = {
    "requested_by": "service:bench",
    "skill_name": "enrich",
    "skill_execution_id": _ID,
    "title": "Enrich 100 rows with Clearbit",
    "summary": "benchmark request: enrich the selected rows of table leads",
    "risk_level": "medium",
    "action": {
        "kind": "provider_call",
        "mode": "live",
        "provider": "clearbit",
        "scope": {"table": "leads", "column": "company", "row_count": 100},
        "max_credits": 100.0,
        "expected_credits": 80.0,
    },
}
BODY_PREFIX, BODY_SUFFIX = (
    part.encode() for part in msgspec.json.encode(REQUEST_BODY).decode().split(_ID)
)


def request_body(unique: str) -> bytes:
    return b"".join((BODY_PREFIX, unique.encode(), BODY_SUFFIX))


# -- results -------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    clients: int
    processes: int  # load-generator processes
    ok: int  # saves (baseline) or requests answered ok
    errors: int
    load_s: float  # first send to last reply (baseline: first to last save)
    catch_up_ms: float  # last reply until the stream held every stored event (>= 0)
    rate: float  # baseline: saves/s; requests: ok / (load_s + catch-up)
    reply_rate: float  # ok / load_s: what the replies alone would claim
    p50_ms: float
    p99_ms: float
    max_ms: float
    latency_ms: dict[str, float]
    last_event_after_reply_ms: float = 0.0  # the same, signed: < 0 when the stream was first
    ratio: float = 0.0  # rate / baseline rate
    bus_ratio: float = 0.0  # service rows: rate / the no-op responder's rate at as many clients
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over load + catch-up
    service_cpu_us_per_request: float = 0.0


def percentile(sorted_values: list[float] | array[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_stats(latencies: array[float]) -> dict[str, float]:
    """Percentiles in milliseconds: p50, p90, p99, p99.9 and max."""
    values = sorted(latencies)
    stats = {name: percentile(values, q) * 1e3 for name, q in _PERCENTILES.items()}
    stats["max"] = (values[-1] if values else math.nan) * 1e3
    return stats


_PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}


# -- the store -----------------------------------------------------------------------------------


@dataclass
class StoreChoice:
    """SQLite files in the run's directory, or fresh schemas ``bench_<hex>_<part>`` in one
    PostgreSQL database (dropped at the end, so runs and tests never share tables)."""

    backend: str = "sqlite"
    dsn: str | None = None
    prefix: str = field(default_factory=lambda: f"bench_{uuid4().hex[:10]}")

    def schema(self, part: str) -> str:
        return f"{self.prefix}_{part}"

    def settings(self, sqlite_path: Path, part: str) -> Settings:
        if self.backend == "sqlite":
            return Settings(sqlite_path=sqlite_path)
        return Settings(store="postgres", postgres_dsn=self.dsn, postgres_schema=self.schema(part))

    def env(self, sqlite_path: Path, view_path: Path, part: str) -> dict[str, str]:
        if self.backend == "sqlite":
            return {
                "APPROVALS_STORE": "sqlite",
                "APPROVALS_SQLITE_PATH": str(sqlite_path),
                "APPROVALS_VIEW_SQLITE_PATH": str(view_path),
            }
        assert self.dsn is not None
        return {
            "APPROVALS_STORE": "postgres",
            "APPROVALS_POSTGRES_DSN": self.dsn,
            "APPROVALS_POSTGRES_SCHEMA": self.schema(part),
            "APPROVALS_VIEW_POSTGRES_SCHEMA": self.schema(part + "_view"),
        }

    def drop(self, *parts: str) -> None:
        if self.backend != "postgres":
            return
        assert self.dsn is not None
        for part in parts:
            with contextlib.suppress(Exception):
                drop_schema(self.dsn, self.schema(part))


# -- 1. baseline ---------------------------------------------------------------------------------


def sqlite_settings_in_use(app: Approvals) -> tuple[str, int]:
    """journal_mode and synchronous of the store's writer connection (2 = FULL)."""
    datastore = app.recorder.datastore  # type: ignore[attr-defined]
    with datastore.get_connection(commit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode;")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous;")
        synchronous = cursor.fetchone()[0]
    return str(journal_mode), int(synchronous)


def postgres_settings_in_use(dsn: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return {
        "backend": "postgres",
        "server_version": version[0] if version else "?",
        "synchronous_commit": sync_commit[0] if sync_commit else "?",
        "fsync": fsync[0] if fsync else "?",
        "driver": f"psycopg {importlib.metadata.version('psycopg')} ({psycopg.pq.__impl__})",
    }


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def bench_baseline(
    tmp: Path, seconds: float, store: StoreChoice | None = None
) -> tuple[Row, dict[str, Any]]:
    """Sequential ``app.save(one Requested event)`` on our store configuration."""
    store = store or StoreChoice()
    settings = store.settings(tmp / "baseline.db", "baseline")
    app = Approvals(store_env(settings))
    try:
        if store.backend == "postgres":
            assert store.dsn is not None
            store_settings = postgres_settings_in_use(store.dsn)
        else:
            journal_mode, synchronous = sqlite_settings_in_use(app)
            store_settings = {"journal_mode": journal_mode, "synchronous": synchronous}
        cmd = command_decoders["request"].decode(request_body("baseline"))

        def save_one() -> float:
            event = domain.request(
                cmd,  # type: ignore[arg-type]
                approval_id=uuid4(),
                workspace_id=WORKSPACE,
                now=datetime.now(UTC),
                default_expiry_s=settings.default_expiry_s,
            )
            started = clock()
            app.save(event)
            return clock() - started

        for _ in range(50):  # warm up: statement cache, page cache, file growth
            save_one()
        latencies: array[float] = array("d")
        cpu_started = time.process_time()
        started = clock()
        deadline = started + seconds
        while True:
            latencies.append(save_one())
            if clock() >= deadline:
                break
        elapsed = clock() - started
        cpu = time.process_time() - cpu_started
    finally:
        app.close()
        for leftover in tmp.glob("baseline.db*"):
            leftover.unlink()
        if store.backend == "postgres":
            assert store.dsn is not None
            drop_schema(store.dsn, store.schema("baseline"))
    latency = latency_stats(latencies)
    rate = len(latencies) / elapsed
    row = Row(
        name="baseline save (seq)",
        clients=1,
        processes=1,
        ok=len(latencies),
        errors=0,
        load_s=elapsed,
        catch_up_ms=0.0,
        rate=rate,
        reply_rate=rate,
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        max_ms=latency["max"],
        latency_ms=latency,
        ratio=1.0,
        cpu={"benchmark": 100 * cpu / elapsed},
    )
    return row, store_settings


# -- 3. load generator ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int = 0
    errors: int = 0
    started: float = 0.0
    last_reply: float = 0.0
    last_reply_wall: float = 0.0  # the same instant on the wall clock (time.time())
    cpu_s: float = 0.0  # CPU seconds the generator process(es) used
    latencies: array[float] = field(default_factory=lambda: array("d"))


async def _client(
    nc: Client, tag: str, deadline: float, result: LoadResult, subject: str = SUBJECT
) -> None:
    n = 0
    while clock() < deadline:
        body = b"".join((BODY_PREFIX, f"{tag}-{n}".encode(), BODY_SUFFIX))
        n += 1
        sent = clock()
        try:
            msg = await nc.request(subject, body, timeout=REQUEST_TIMEOUT_S)
        except (NatsTimeoutError, NoRespondersError):
            result.errors += 1
            continue
        replied = clock()
        if msg.data.startswith(OK_PREFIX):
            result.ok += 1
            result.latencies.append(replied - sent)
        else:
            result.errors += 1
        result.last_reply = max(result.last_reply, replied)


async def run_clients(
    nc: Client, clients: int, tag: str, start_at: float, seconds: float, subject: str = SUBJECT
) -> LoadResult:
    """``clients`` tasks, each sending one request at a time until ``start_at + seconds``."""
    result = LoadResult()
    await asyncio.sleep(max(0.0, start_at - clock()))
    cpu_started = time.process_time()
    result.started = clock()
    deadline = result.started + seconds
    await asyncio.gather(
        *(_client(nc, f"{tag}-{i}", deadline, result, subject) for i in range(clients))
    )
    result.cpu_s = time.process_time() - cpu_started
    result.last_reply_wall = result.last_reply + (time.time() - clock())
    return result


def _worker(conn: Connection, url: str, clients: int, tag: str, seconds: float) -> None:
    """A load-generator process: connect, warm up, report ready, run from the given start."""

    async def main() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await nc.request(SUBJECT, request_body(f"{tag}-warmup"), timeout=REQUEST_TIMEOUT_S)
            conn.send("ready")
            start_at = await asyncio.to_thread(conn.recv)
            result = await run_clients(nc, clients, tag, start_at, seconds)
            conn.send(
                {
                    "ok": result.ok,
                    "errors": result.errors,
                    "started": result.started,
                    "last_reply": result.last_reply,
                    "last_reply_wall": result.last_reply_wall,
                    "cpu_s": result.cpu_s,
                    "latencies": result.latencies.tobytes(),
                }
            )
        finally:
            await nc.close()

    asyncio.run(main())


async def run_clients_in_processes(
    url: str, clients: int, processes: int, tag: str, seconds: float
) -> LoadResult:
    """Split ``clients`` over ``processes`` spawned processes, start them together, sum up."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    finished = False
    try:
        for p in range(processes):
            share = clients // processes + (1 if p < clients % processes else 0)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, url, share, f"{tag}-p{p}", seconds), daemon=True
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for pipe in pipes:
            if not await asyncio.to_thread(pipe.poll, START_TIMEOUT_S):
                raise RuntimeError("a load-generator process did not start")
            pipe.recv()
        start_at = clock() + 0.2
        for pipe in pipes:
            pipe.send(start_at)
        total = LoadResult(started=start_at)
        for pipe in pipes:
            if not await asyncio.to_thread(pipe.poll, seconds + REQUEST_TIMEOUT_S + 30):
                raise RuntimeError("a load-generator process did not finish")
            part = pipe.recv()
            total.ok += part["ok"]
            total.errors += part["errors"]
            total.started = min(total.started, part["started"])
            total.last_reply = max(total.last_reply, part["last_reply"])
            total.last_reply_wall = max(total.last_reply_wall, part["last_reply_wall"])
            total.cpu_s += part["cpu_s"]
            total.latencies.frombytes(part["latencies"])
        finished = True
        return total
    finally:
        for proc in procs:
            proc.join(5 if finished else 0)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -- 4. the bus's own limit ---------------------------------------------------------------------

NOOP_SUBJECT = "bench.noop"
NOOP_REPLY = OK_PREFIX + b"}"


def _noop_responder(conn: Connection, url: str) -> None:
    """A process that answers every request on ``NOOP_SUBJECT`` at once with raw nats-py: the
    fastest any responder can be on this bus, machine and load generator."""

    async def main() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)

        async def answer(msg: Any) -> None:
            await nc.publish(msg.reply, NOOP_REPLY)

        await nc.subscribe(NOOP_SUBJECT, cb=answer)
        await nc.flush()
        conn.send(os.getpid())
        await asyncio.to_thread(conn.recv)  # until told to stop
        await nc.close()

    asyncio.run(main())


async def measure_noop_levels(
    stack: Stack, levels: list[tuple[str, int]], seconds: float
) -> list[Row]:
    """The same generator against the no-op responder, in its own process, on the same bus."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_noop_responder, args=(child, stack.url), daemon=True)
    proc.start()
    try:
        if not await asyncio.to_thread(parent.poll, START_TIMEOUT_S):
            raise RuntimeError("the no-op responder did not start")
        pids = {**stack.pids, "responder": parent.recv()}
        pids.pop("service", None)
        rows = []
        for name, clients in levels:
            load_nc = await nats.connect(stack.url, connect_timeout=5)
            try:
                await load_nc.request(NOOP_SUBJECT, b"warm-up", timeout=5)
                cpu_before = {role: _cpu_seconds(pid) for role, pid in pids.items()}
                result = await run_clients(
                    load_nc, clients, f"noop{clients}", clock(), seconds, NOOP_SUBJECT
                )
                wall = clock() - result.started
                cpu = {
                    role: 100 * (_cpu_seconds(pid) - cpu_before[role]) / wall
                    for role, pid in pids.items()
                }
            finally:
                await load_nc.close()
            load_s = result.last_reply - result.started
            latency = latency_stats(result.latencies)
            rows.append(
                Row(
                    name=name,
                    clients=clients,
                    processes=1,
                    ok=result.ok,
                    errors=result.errors,
                    load_s=load_s,
                    catch_up_ms=0.0,
                    rate=result.ok / load_s,
                    reply_rate=result.ok / load_s,
                    p50_ms=latency["p50"],
                    p99_ms=latency["p99"],
                    max_ms=latency["max"],
                    latency_ms=latency,
                    cpu=cpu,
                )
            )
        return rows
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- 2. the service and its surroundings ---------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StreamState(msgspec.Struct):
    messages: int
    last_ts: datetime  # when the stream stored its last message (nats-server's wall clock)


class _StreamInfo(msgspec.Struct):
    state: StreamState


_stream_info_decoder = msgspec.json.Decoder(_StreamInfo)


class Stack:
    """nats-server + ``approvals serve`` in a temporary directory."""

    def __init__(
        self,
        tmp: Path,
        with_projection: bool,
        store: StoreChoice | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.extra_env = extra_env or {}  # e.g. the OTLP endpoint (--tracing)
        self.with_projection = with_projection
        self.store_choice = store or StoreChoice()
        self._pg: Any = None  # a psycopg connection to the PostgreSQL store
        self.store_path = tmp / "approvals.db"
        self.log_path = tmp / "service.log"
        self.server = NatsServer(tmp / "js")
        self.service: subprocess.Popen[bytes] | None = None
        self.nc: Client | None = None
        self.store: sqlite3.Connection | None = None
        self.command_line: list[str] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pids(self) -> dict[str, int]:
        pids = {"benchmark": os.getpid()}
        if self.service is not None:
            pids["service"] = self.service.pid
        process = self.server._process  # the nats-server child, for its CPU time
        if process is not None:
            pids["nats-server"] = process.pid
        return pids

    def service_command(self) -> list[str]:
        approvals = Path(sys.executable).parent / "approvals"
        base = (
            [str(approvals)]
            if approvals.exists()
            else [sys.executable, "-c", "from approvals.services.cli import main; main()"]
        )
        args = ["serve"]
        if not self.with_projection:
            usage = subprocess.run(
                [*base, "serve", "--help"], capture_output=True, text=True, timeout=60
            ).stdout
            if "--only" in usage:
                args += ["--only", "commands"]
        return [*base, *args]

    async def start(self) -> None:
        # Blocking on purpose (nothing else runs yet): a signal then finds the process recorded.
        self.server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APPROVALS_", "NATS_"))}
        env |= {
            "NATS_URL": self.url,
            **self.store_choice.env(self.store_path, self.tmp / "status.db", "service"),
            "PYTHONUNBUFFERED": "1",
        }
        # No ops endpoint: nothing reads it here, and another service may hold its port.
        env |= {"APPROVALS_OPS_PORT": "0", **self.extra_env}
        settings = self.store_choice.settings(self.store_path, "service")
        bootstrap_workspace(settings, WORKSPACE, BENCH_WORKSPACE)
        self.command_line = self.service_command()
        with self.log_path.open("wb") as log:
            self.service = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                self.command_line,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
            )
        self.nc = await nats.connect(self.url, connect_timeout=5)
        await self._wait_until_it_answers()
        if self.store_choice.backend == "postgres":
            import psycopg

            self._pg = psycopg.connect(self.store_choice.dsn or "", autocommit=True)
        else:
            self.store = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True)

    async def _wait_until_it_answers(self) -> None:
        assert self.nc is not None
        assert self.service is not None
        deadline = clock() + START_TIMEOUT_S
        while clock() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.log_tail()}")
            try:
                msg = await self.nc.request(SUBJECT, request_body("ready-check"), timeout=1)
            except (NoRespondersError, NatsTimeoutError):
                await asyncio.sleep(0.1)
                continue
            if not msg.data.startswith(OK_PREFIX):
                raise RuntimeError(f"unexpected reply: {msg.data[:300]!r}")
            return
        raise RuntimeError(f"the service did not answer in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stored_events(self) -> int:
        """The store's event count (SQLite: its last notification id, the same there; not on
        PostgreSQL, whose ids have gaps: a rolled-back insert still used its id)."""
        if self._pg is not None:
            from psycopg import sql

            table = sql.Identifier(self.store_choice.schema("service"), "approvals_events")
            row = self._pg.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            return int(row[0])
        assert self.store is not None
        (last,) = self.store.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
        return int(last or 0)

    async def stream_state(self) -> StreamState:
        """The stream's message count and when it stored its last message (its own clock)."""
        assert self.nc is not None
        msg = await self.nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5)
        return _stream_info_decoder.decode(msg.data).state

    async def wait_for_stream(self, target: int) -> StreamState:
        """Poll (about every ms) until the stream holds ``target`` messages."""
        deadline = clock() + CATCH_UP_TIMEOUT_S
        while (state := await self.stream_state()).messages < target:
            if clock() > deadline:
                raise RuntimeError(
                    f"the stream holds {state.messages} of {target} events after "
                    f"{CATCH_UP_TIMEOUT_S} s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.001)
        if state.messages != target:
            raise RuntimeError(f"the stream holds {state.messages} messages, the store {target}")
        return state

    async def stop(self) -> None:
        """Stop everything; a second Ctrl-C during it still stops the processes."""
        try:
            if self.store is not None:
                self.store.close()
            if self._pg is not None:
                self._pg.close()
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.close(), 5)
        finally:
            service, self.service = self.service, None
            try:
                if service is not None and service.poll() is None:
                    service.terminate()  # SIGTERM: it answers what is queued, then stops
                    service.wait(15)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if service is not None and service.poll() is None:
                    service.kill()
                    service.wait()
                self.server.stop()
                self.store_choice.drop("service", "service_view")


def start_profiler(
    stack: Stack, profile: Path, profile_format: str, name: str, seconds: float
) -> subprocess.Popen[bytes]:
    """py-spy on the service for one level; it samples without pausing the service."""
    assert stack.service is not None
    here = str(Path(sys.executable).parent)
    py_spy = shutil.which("py-spy", path=here) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    profile.mkdir(parents=True, exist_ok=True)
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[profile_format]
    return subprocess.Popen(
        [
            *(py_spy, "record", "--nonblocking", "--format", profile_format),
            *("--pid", str(stack.service.pid), "--duration", str(math.ceil(seconds))),
            *("--output", str(profile / f"{name}.{suffix}")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def finish_profiler(profiler: subprocess.Popen[bytes]) -> None:
    try:
        await asyncio.to_thread(profiler.wait, 30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()


async def measure_level(
    stack: Stack,
    name: str,
    clients: int,
    processes: int,
    seconds: float,
    tag: str,
    profile: Path | None = None,
    profile_format: str = "flamegraph",
) -> Row:
    """One level of load, then wait until the stream holds every stored event."""
    before = stack.stored_events()
    await stack.wait_for_stream(before)  # start with the relay idle
    pids = stack.pids
    load_nc: Client | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if processes == 1:
            load_nc = await nats.connect(stack.url, connect_timeout=5)
            await load_nc.request(SUBJECT, request_body(f"{tag}-warmup"), timeout=5)
            before += 1  # the warm-up request's event
        else:
            before += processes  # each process sends one warm-up request before the start
        if profile is not None:
            profiler = start_profiler(stack, profile, profile_format, tag, seconds)
        cpu_before = {role: _cpu_seconds(pid) for role, pid in pids.items()}
        if load_nc is not None:
            result = await run_clients(load_nc, clients, tag, clock(), seconds)
        else:
            result = await run_clients_in_processes(stack.url, clients, processes, tag, seconds)
        stored = stack.stored_events()
        state = await stack.wait_for_stream(stored)
        wall = clock() - result.started
        cpu = {
            role: 100 * (_cpu_seconds(pid) - cpu_before[role]) / wall for role, pid in pids.items()
        }
    except BaseException:
        if profiler is not None:
            profiler.kill()
            profiler.wait()
        raise
    finally:
        if load_nc is not None:
            await load_nc.close()
    if profiler is not None:
        await finish_profiler(profiler)
    if processes > 1:
        cpu["generator processes"] = 100 * result.cpu_s / wall
    if stored - before != result.ok:
        raise RuntimeError(
            f"{name}: {result.ok} ok replies but {stored - before} new events in the store"
        )
    load_s = result.last_reply - result.started
    # The relay's lag: from the last reply to the stream storing the last event, both on the
    # wall clock of this machine (nats-server stamps each stored message).
    last_event_after_reply_s = state.last_ts.timestamp() - result.last_reply_wall
    catch_up_s = max(0.0, last_event_after_reply_s)
    latency = latency_stats(result.latencies)
    service_cpu_s = cpu.get("service", math.nan) * wall / 100
    return Row(
        name=name,
        clients=clients,
        processes=processes,
        ok=result.ok,
        errors=result.errors,
        load_s=load_s,
        catch_up_ms=catch_up_s * 1e3,
        last_event_after_reply_ms=last_event_after_reply_s * 1e3,
        rate=result.ok / (load_s + catch_up_s),
        reply_rate=result.ok / load_s,
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        max_ms=latency["max"],
        latency_ms=latency,
        cpu=cpu,
        service_cpu_us_per_request=1e6 * service_cpu_s / max(1, result.ok),
    )


# -- traces on (--tracing) -------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def measure_traced(
    args: argparse.Namespace, tmp: Path, say: Callable[[str], None], store: StoreChoice
) -> list[Row]:
    """The same two levels against a fresh service with traces on (OTEL_EXPORTER_OTLP_ENDPOINT
    set, so it installs the SDK and exports every span) in the same run."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    stack = Stack(tmp, args.with_projection, store, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    try:
        say("traces on: a second service exporting to a local OTLP receiver ...")
        await stack.start()
        await measure_level(stack, "warm-up", args.clients, 1, args.warmup, "t-warmup")
        say(f"traces on: 1 client, then {args.clients} clients, {args.seconds} s each ...")
        seq = await measure_level(stack, "traced seq (1 client)", 1, 1, args.seconds, "t-seq")
        many = await measure_level(stack, f"traced {args.clients} clients", args.clients,
                                   args.processes, args.seconds, "t-many")  # fmt: skip
    finally:
        await stack.stop()
        sink.shutdown()
    return [seq, many]


# -- machine info and output ---------------------------------------------------------------------


def code_version() -> str:
    """The commit under test and how many files differ from it (the figures depend on both)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", ".", ":!benchmarks"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{commit}" + (f" + {len(changed)} changed file(s)" if changed else " (clean)")


def nats_server_version() -> str:
    try:
        return subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def machine_info(store_settings: dict[str, Any], load_before: list[float]) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("eventsourcing", "nats-py", "msgspec", "faststream"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "code": code_version(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nats_server": nats_server_version(),
        "packages": versions,
        "load_average_before": load_before,
        "sqlite": sqlite3.sqlite_version,
        "store": (
            store_settings
            if store_settings.get("backend") == "postgres"
            else {**store_settings, "synchronous_name": _SYNC.get(store_settings["synchronous"])}
        ),
    }


_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _store_line(m: dict[str, Any]) -> str:
    store = m["store"]
    if store.get("backend") == "postgres":
        return (
            f"store        PostgreSQL {store['server_version']}, synchronous_commit="
            f"{store['synchronous_commit']}, fsync={store['fsync']}, {store['driver']}"
        )
    return (
        f"store        SQLite {m['sqlite']}, journal_mode={store['journal_mode']}, "
        f"synchronous={store['synchronous_name']}"
    )


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine      {m['cores']} cores ({m['usable_cores']} usable) {m['cpu']}".rstrip(),
        f"python       {m['python']} on {m['platform']}",
        "load average "
        + " ".join(f"{x:.2f}" for x in m["load_average_before"])
        + "  (1/5/15 min, before the run: other work on the machine skews the figures)",
        f"nats-server  {m['nats_server']}",
        "packages     " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        _store_line(m),
        f"service      {' '.join(report['service_command'])}  (own process), code {m['code']}",
        f"run          {report['seconds']} s per level; load generator for "
        f"{report['clients']} clients: {report['load_processes']} process(es)",
        "",
    ]
    header = (
        f"{'':24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"
        f"{'replies/s':>11}{'catch-up ms':>13}{'max ms':>9}{'n':>8}{'svc CPU':>9}{'us/req':>8}"
    )
    lines += [header, "-" * len(header)]
    for row in report["rows"]:
        svc = row["cpu"].get("service")
        lines.append(
            f"{row['name']:24}{row['rate']:>9,.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['ratio']:>7.2f}x{row['reply_rate']:>11,.0f}"
            + (f"{row['catch_up_ms']:>13.1f}" if svc is not None else f"{'-':>13}")
            + f"{row['max_ms']:>9.2f}{row['ok']:>8}"
            + (f"{svc:>8.0f}%" if svc is not None else f"{'-':>9}")
            + (f"{row['service_cpu_us_per_request']:>8.0f}" if svc is not None else f"{'-':>8}")
        )
    lines.append("")
    for row in report["rows"]:
        cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in row["cpu"].items())
        lines.append(f"CPU (% of one core)  {row['name']:24} {cpu}")
    rates = {row["name"]: row["rate"] for row in report["rows"]}
    for traced, plain in (("traced seq (1 client)", "requests seq (1 client)"),
                          (f"traced {report['clients']} clients",
                           f"requests {report['clients']} clients")):  # fmt: skip
        if traced in rates:
            lines.append(f"traces on / off  {plain[9:]:16} {rates[traced] / rates[plain]:.2f}x")
    bus = [row for row in report["rows"] if row.get("bus_ratio")]
    if bus:
        lines.append(
            "service / no-op responder at as many clients (the share of the bus path's limit "
            "the service reaches): "
            + ", ".join(f"{row['name']} {row['bus_ratio']:.2f}x" for row in bus)
        )
    errors = sum(row["errors"] for row in report["rows"])
    if errors:
        lines.append(f"\n{errors} requests failed or timed out (not counted)")
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    load_before = [round(x, 2) for x in os.getloadavg()]
    store = StoreChoice(args.store, args.postgres_dsn if args.store == "postgres" else None)
    say(f"baseline: sequential eventsourcing saves ({args.store}) for {args.seconds} s ...")
    baseline, store_settings = bench_baseline(tmp, args.seconds, store)  # nothing else runs yet

    stack = Stack(tmp, with_projection=args.with_projection, store=store)
    try:
        say("starting nats-server and the service ...")
        await stack.start()
        say(f"warm-up: {args.warmup} s with {args.clients} clients ...")
        await measure_level(stack, "warm-up", args.clients, 1, args.warmup, "warmup")
        say(f"1 client for {args.seconds} s ...")
        profile = (args.profile, args.profile_format)
        seq = await measure_level(
            stack, "requests seq (1 client)", 1, 1, args.seconds, "seq", *profile
        )
        say(f"{args.clients} clients ({args.processes} process(es)) for {args.seconds} s ...")
        many = await measure_level(
            stack,
            f"requests {args.clients} clients",
            args.clients,
            args.processes,
            args.seconds,
            f"clients{args.clients}",
            *profile,
        )
        command_line = stack.command_line
        say(f"no-op responder (the bus's limit): 1 and {args.clients} clients ...")
        noop_seq, noop_many = await measure_noop_levels(
            stack,
            [("no-op responder (1)", 1), (f"no-op responder ({args.clients})", args.clients)],
            args.seconds,
        )
    finally:
        await stack.stop()
    rows = [baseline, seq, many, noop_seq, noop_many]
    if args.tracing:
        (tmp / "traced").mkdir()
        rows += await measure_traced(args, tmp / "traced", say, store)
    for row in rows[1:]:
        row.ratio = row.rate / baseline.rate
    seq.bus_ratio = seq.rate / noop_seq.rate
    many.bus_ratio = many.rate / noop_many.rate
    return {
        "machine": machine_info(store_settings, load_before),
        "seconds": args.seconds,
        "clients": args.clients,
        "load_processes": args.processes,
        "service_command": [Path(command_line[0]).name, *command_line[1:]],
        "store": args.store,
        "rows": [asdict(row) for row in rows],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per level (5)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="load-generator processes for the concurrent level (1; the clients are split)",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of unmeasured load first (1)"
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the service's store and the baseline's: SQLite files (default) or PostgreSQL, "
        "in fresh schemas dropped at the end",
    )
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get(
            "APPROVALS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL for --store postgres (APPROVALS_TEST_POSTGRES_DSN, else "
        "postgresql://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument(
        "--with-projection",
        action="store_true",
        help="run plain `approvals serve` (command service and status projection in one process)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also measure both levels again with traces on (a second service exporting every "
        "span over OTLP/HTTP to a local receiver that discards them); print on/off ratios",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the service with py-spy during each measured level into DIR "
        "(needs `.venv/bin/pip install py-spy`; costs some CPU on the machine)",
    )
    parser.add_argument(
        "--profile-format",
        choices=["flamegraph", "raw", "speedscope"],
        default="flamegraph",
        help="py-spy output: flamegraph (.svg), raw collapsed stacks (.txt), speedscope (.json)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1 or not 1 <= args.processes <= args.clients:
        parser.error("need --seconds > 0, --clients >= 1 and 1 <= --processes <= --clients")
    return args


@contextlib.contextmanager
def temporary_directory() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-approvals-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        print(f"\ninterrupted ({signal.Signals(signum).name}): cleaning up", file=sys.stderr)
        raise SystemExit(128 + signum)  # unwinds through every clean-up below

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    with temporary_directory() as tmp:
        report = asyncio.run(run(args, tmp))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
