"""Load test: steady mixed traffic against a replicated cluster and against the embedded default.

    .venv/bin/python benchmarks/bench_load.py [--seconds 20] [--clients 20] [--json]
        [--targets cluster,embedded] [--postgres-dsn DSN]

For each target, in a temporary directory removed at the end:

- ``cluster``: three nats-servers routed as one cluster, every stream and bucket with three
  replicas (``approvals.services.runtime.bus.setup(js, 3)``), the PostgreSQL event store and
  status view (fresh
  schemas ``load_<hex>`` and ``load_<hex>_view``, dropped at the end), and in their own processes
  two ``approvals serve --only commands`` (the relay's lease lets one of them publish), one
  ``--only projection`` and one ``--only spendcap``;
- ``embedded``: one nats-server, SQLite store and view, one process of each of the three.

The same traffic against both, for ``--seconds``: ``--clients`` asyncio tasks, each sending a
``request`` (a live provider call: pending, needs a person's approval), approving about half of
them (``approve`` with the digest from the reply) and sending about two queries per request
(``get`` of one of its earlier approvals, ``list`` or ``count``). Meanwhile the consumers' lag on
``APPROVALS_EVENTS``, the relay's and the status projection's are sampled every ``--sample``
seconds. After the load the run waits (``--drain-timeout``) until every lag is 0, then checks
that the stream is the store's log message by message, that the view holds what the store holds,
and that every acknowledged request and decision is stored; any difference fails the run
(exit status 1).

Progress goes to stderr, the table to stdout. See benchmarks/README.md for every row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from bench_requests import (  # beside this file: its workspace, request body, statistics
    BENCH_WORKSPACE,
    OK_PREFIX,
    WORKSPACE,
    _cpu_seconds,
    code_version,
    cpu_model,
    latency_stats,
    nats_server_version,
    request_body,
    temporary_directory,
)
from nats.errors import Error as NatsError
from nats.js import api

from approvals.projections.status.storage import open_view
from approvals.schemas.subjects import (
    EVENTS_WILDCARD,
    MSG_ID_HEADER,
    NOTIFICATION_ID_HEADER,
    STREAM,
    command,
    query,
)
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.store import store_env
from approvals.services.dev import bootstrap_workspace
from approvals.services.runtime import bus
from approvals.services.runtime.natsserver import NatsCluster, NatsServer, free_port
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from approvals.projections.status.view import StatusView

REQUEST_SUBJECT = command(WORKSPACE, "request")
APPROVE_SUBJECT = command(WORKSPACE, "approve")
QUERY_SUBJECTS = {verb: query(WORKSPACE, verb) for verb in ("get", "list", "count")}
APPROVER = "user:ana"  # BENCH_WORKSPACE's approver: a person
OK = b'{"ok":true'
REPLY_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
# The queries each client cycles through: half `get`, a quarter each `list` and `count`.
QUERY_CYCLE = ("get", "list", "get", "count")
LIST_BODY = b'{"status":"pending","limit":20}'
COUNT_BODY = b"{}"
KINDS = ("request", "decision", "query")
clock = time.monotonic

# Every process started, for the last-resort clean-up in main() (a signal during a target).
_PROCESSES: list[subprocess.Popen[bytes]] = []
_SERVERS: list[NatsServer | NatsCluster] = []
_SCHEMAS: list[tuple[str, str]] = []  # (dsn, schema) to drop


class BenchFailure(Exception):
    """The run found something wrong: exit status 1."""


# -- replies --------------------------------------------------------------------------------------


class _Approval(msgspec.Struct):
    id: str
    digest: str


class _RequestReply(msgspec.Struct):
    ok: bool
    approval: _Approval | None = None


_request_reply = msgspec.json.Decoder(_RequestReply)


class _CountReply(msgspec.Struct):
    counts: dict[str, int]
    total: int


_count_reply = msgspec.json.Decoder(_CountReply)


def approve_body(approval: _Approval) -> bytes:
    return b'{"approval_id":"%s","approver":"%s","digest":"%s"}' % (
        approval.id.encode(),
        APPROVER.encode(),
        approval.digest.encode(),
    )


def get_body(approval_id: str) -> bytes:
    # min_version 1: an approval the projection has not reached yet is waited for (2 s at most),
    # never `not_found`; a projection that lags shows up in the `get` latency.
    return b'{"approval_id":"%s","min_version":1}' % approval_id.encode()


# -- the load -------------------------------------------------------------------------------------


@dataclass
class Load:
    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    error_samples: list[str] = field(default_factory=list)
    latencies: dict[str, array[float]] = field(default_factory=dict)
    acked_requests: set[str] = field(default_factory=set)
    acked_decisions: set[str] = field(default_factory=set)
    started: float = 0.0
    last_reply: float = 0.0

    def record(self, kind: str, verb: str, sent: float, reply: bytes | None) -> bool:
        replied = clock()
        self.last_reply = max(self.last_reply, replied)
        if reply is None or not reply.startswith(OK):
            self.errors[kind] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{verb}: {(reply or b'timed out')[:300]!r}")
            return False
        self.ok[kind] += 1
        self.latencies.setdefault(kind, array("d")).append(replied - sent)
        if kind == "query":
            self.latencies.setdefault(verb, array("d")).append(replied - sent)
        return True


async def ask(nc: Client, subject: str, body: bytes) -> bytes | None:
    try:
        msg = await nc.request(subject, body, timeout=REPLY_TIMEOUT_S)
    except (NatsError, TimeoutError):
        return None
    return bytes(msg.data)


async def client(
    nc: Client, c: int, deadline: float, load: Load, decide_ratio: float, queries: float
) -> None:
    rng = random.Random(c)
    mine: list[str] = []  # this client's approvals, for `get`
    n = q = 0
    while clock() < deadline:
        n += 1
        sent = clock()
        reply = await ask(nc, REQUEST_SUBJECT, request_body(f"load-{c}-{n}"))
        approval = None
        if load.record("request", "request", sent, reply) and reply is not None:
            approval = _request_reply.decode(reply).approval
        if approval is not None:
            load.acked_requests.add(approval.id)
            if rng.random() < decide_ratio:
                sent = clock()
                reply = await ask(nc, APPROVE_SUBJECT, approve_body(approval))
                if load.record("decision", "approve", sent, reply):
                    load.acked_decisions.add(approval.id)
        for _ in range(int(queries) + (rng.random() < queries % 1)):
            verb = QUERY_CYCLE[q % len(QUERY_CYCLE)]
            q += 1
            if verb == "get" and not mine:
                verb = "count"  # nothing of its own to read yet
            if verb == "get":
                body = get_body(rng.choice(mine))
            else:
                body = LIST_BODY if verb == "list" else COUNT_BODY
            sent = clock()
            load.record("query", verb, sent, await ask(nc, QUERY_SUBJECTS[verb], body))
        if approval is not None:
            mine.append(approval.id)


# -- lag ------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load started
    store_last: int  # the store's last notification id
    published: int  # the notification id of the stream's last message
    stream_messages: int
    consumers: dict[str, int]  # durable -> num_pending + num_ack_pending
    position: int  # the status view's position (a notification id)

    # Read in this order (store, stream, consumers, view), a later reading can be ahead of an
    # earlier one: such a lag is 0, not negative.
    @property
    def relay_lag(self) -> int:
        return max(0, self.store_last - self.published)

    @property
    def projection_lag(self) -> int:
        return max(0, self.published - self.position)

    @property
    def consumer_lag(self) -> int:
        return max(self.consumers.values(), default=0)

    @property
    def drained(self) -> bool:
        return self.relay_lag == 0 and self.projection_lag == 0 and self.consumer_lag == 0


class Probe:
    """Reads the lag: the store and the view directly, the stream and its consumers over NATS."""

    def __init__(self, nc: Client, app: Approvals, view: StatusView) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.app = app
        self.view = view

    async def sample(self, t0: float) -> Sample:
        # The store first: whatever the others show was stored before it was read.
        store_last = await asyncio.to_thread(self.app.last_notification_id)
        info = await self.js.stream_info(STREAM)
        published = 0
        if info.state.messages:
            last = await self.js.get_msg(STREAM, seq=info.state.last_seq)
            published = int((last.headers or {})[NOTIFICATION_ID_HEADER])
        consumers = {
            c.name: (c.num_pending or 0) + (c.num_ack_pending or 0)
            for c in await self.js.consumers_info(STREAM)
        }
        position = await asyncio.to_thread(self.view.position)
        return Sample(
            t=clock() - t0,
            store_last=store_last,
            published=published,
            stream_messages=info.state.messages,
            consumers=consumers,
            position=position,
        )

    async def wait_drained(
        self, t0: float, within_s: float, since: float | None = None
    ) -> tuple[float, Sample]:
        """Until two samples in a row show no lag at the same store position (the second one
        confirms the first): the seconds from ``since`` (default: now) to the first of them."""
        started = previous_taken = clock()
        since = started if since is None else since
        previous: Sample | None = None
        while True:
            with contextlib.suppress(NatsError, TimeoutError):
                taken = clock()
                sample = await self.sample(t0)
                if (
                    sample.drained
                    and previous is not None
                    and previous.drained
                    and previous.store_last == sample.store_last
                ):
                    return max(0.0, previous_taken - since), previous
                previous, previous_taken = sample, taken
            if clock() - started > within_s:
                raise BenchFailure(f"the lag did not reach 0 in {within_s:.0f} s: {previous}")
            await asyncio.sleep(0.05)


async def sampler(probe: Probe, t0: float, every: float, samples: list[Sample]) -> None:
    while True:
        with contextlib.suppress(NatsError, TimeoutError):
            samples.append(await probe.sample(t0))
        await asyncio.sleep(every)


# -- the services ---------------------------------------------------------------------------------


def approvals_command() -> list[str]:
    approvals = Path(sys.executable).parent / "approvals"
    if approvals.exists():
        return [str(approvals)]
    return [sys.executable, "-c", "from approvals.services.cli import main; main()"]


@dataclass
class Service:
    role: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = ["(no log)"]
        return f"--- {self.role} ({self.log.name}) ---\n" + "\n".join(text)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service answers what is queued and stops), SIGKILL after a while."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ValueError):
        _PROCESSES.remove(process)


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    with contextlib.suppress(ValueError):
        _SCHEMAS.remove((dsn, schema))


def safe_dsn(dsn: str) -> str:
    """The DSN to print: without its password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "(an unreadable DSN)"
    info.pop("password", None)
    return make_conninfo(**info)  # type: ignore[arg-type]


def postgres_version(dsn: str) -> str:
    """The server's version; raises when it cannot be reached."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class Stack:
    """A bus, a store and the services in their own processes; ``close()`` removes them all."""

    label = ""

    def __init__(self, tmp: Path, say: Callable[[str], None]) -> None:
        self.tmp = tmp
        self.say = say
        self.services: list[Service] = []
        self.nc: Client | None = None
        self.app: Approvals | None = None
        self.view: StatusView | None = None
        self.settings = Settings()
        self.env: dict[str, str] = {}
        self.url = ""
        self.roles: list[tuple[str, str]] = []  # (name, --only)

    async def start_bus(self) -> None:
        raise NotImplementedError

    def prepare_store(self) -> None:
        raise NotImplementedError

    def close_bus(self) -> None:
        raise NotImplementedError

    def close_store(self) -> None:
        pass

    def describe(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        await self.start_bus()
        self.nc = await nats.connect(
            self.url.split(","), connect_timeout=5, max_reconnect_attempts=20,
            reconnect_time_wait=0.2,
        )  # fmt: skip
        await self._setup_streams()
        self.prepare_store()
        signing_key = self.tmp / "signing-key.pem"
        Signer.from_file(signing_key, create=True)  # one key for every command instance
        base = {k: v for k, v in os.environ.items() if not k.startswith(("APPROVALS_", "NATS_"))}
        base |= {
            "NATS_URL": self.url,
            "APPROVALS_SIGNING_KEY": str(signing_key),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        command_line = approvals_command()
        deadline = clock() + START_TIMEOUT_S
        # One at a time, each once it says "ready": two command services starting together on
        # one PostgreSQL store fail in eventsourcing's create_table ("tuple concurrently
        # updated"), although the tables exist already.
        for name, only in self.roles:
            log = self.tmp / f"{name}.log"
            # Each its own ops port (where the setting exists), so nothing clashes on 9180.
            env = base | {"APPROVALS_OPS_PORT": str(free_port())}
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                    [*command_line, "serve", "--only", only],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
                )
            _PROCESSES.append(process)
            self.services.append(Service(name, process, log))
            await self._wait_for_ready_line(self.services[-1], deadline)
        await self._wait_until_ready()
        self.app = Approvals(store_env(self.settings))
        self.view = await asyncio.to_thread(open_view, self.settings)

    async def _setup_streams(self) -> None:
        """Every stream and bucket with the stack's replicas, once the bus has a leader."""
        assert self.nc is not None
        deadline = clock() + START_TIMEOUT_S
        while True:
            try:
                await bus.setup(self.nc.jetstream(), self.replicas)
                return
            except (NatsError, TimeoutError) as error:
                if clock() > deadline:
                    raise BenchFailure(
                        f"bus setup failed for {START_TIMEOUT_S} s: {error}"
                    ) from None
                await asyncio.sleep(0.5)

    replicas = 1

    async def _wait_for_ready_line(self, service: Service, deadline: float) -> None:
        """Until ``approvals serve`` prints that every part of it started."""
        while b"ready: Ctrl-C stops everything" not in service.log.read_bytes():
            if service.process.poll() is not None:
                raise BenchFailure(f"{service.role} exited:\n{service.tail()}")
            if clock() > deadline:
                raise BenchFailure(f"{service.role} not ready in time:\n{service.tail()}")
            await asyncio.sleep(0.05)

    async def _wait_until_ready(self) -> None:
        """A request gets an ok reply, the projection answers, the durable consumers exist."""
        assert self.nc is not None
        deadline = clock() + START_TIMEOUT_S

        def check_alive() -> None:
            for service in self.services:
                if service.process.poll() is not None:
                    raise BenchFailure(f"{service.role} exited:\n{service.tail()}")
            if clock() > deadline:
                raise BenchFailure(
                    f"not ready in {START_TIMEOUT_S:.0f} s:\n"
                    + "\n".join(service.tail() for service in self.services)
                )

        checks: list[tuple[str, bytes, bytes]] = [
            (REQUEST_SUBJECT, request_body("ready-check"), OK_PREFIX),
            (QUERY_SUBJECTS["count"], COUNT_BODY, OK),
        ]
        for subject, body, ok in checks:
            while True:
                check_alive()
                try:
                    msg = await self.nc.request(subject, body, timeout=2)
                except (NatsError, TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                if msg.data.startswith(ok):
                    break
                raise BenchFailure(f"unexpected reply on {subject}: {msg.data[:300]!r}")
        wanted = {"status-projection", "spendcap", "spendcap-deadlines"}
        while True:
            check_alive()
            with contextlib.suppress(NatsError, TimeoutError):
                names = {c.name for c in await self.nc.jetstream().consumers_info(STREAM)}
                if wanted <= names:
                    return
            await asyncio.sleep(0.2)

    def pids(self) -> dict[str, int]:
        pids = {"benchmark": os.getpid()}
        for service in self.services:
            pids[service.role] = service.process.pid
        return pids | self.server_pids()

    def server_pids(self) -> dict[str, int]:
        return {}

    def tails(self) -> str:
        return "\n".join(service.tail() for service in self.services)

    async def close(self) -> None:
        """Stop everything, in order; safe to call twice, and after a failed start."""
        try:
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.close(), 5)
                self.nc = None
        finally:
            try:
                services, self.services = self.services, []
                for service in services:
                    with contextlib.suppress(ProcessLookupError):
                        if service.process.poll() is None:
                            service.process.terminate()
                for service in services:
                    stop_process(service.process)
                if self.app is not None:
                    with contextlib.suppress(Exception):
                        self.app.close()
                    self.app = None
                if self.view is not None:
                    with contextlib.suppress(Exception):
                        self.view.datastore.close()  # type: ignore[attr-defined]
                    self.view = None
            finally:
                try:
                    self.close_bus()
                finally:
                    self.close_store()


class EmbeddedStack(Stack):
    label = "embedded (SQLite)"

    def __init__(self, tmp: Path, say: Callable[[str], None]) -> None:
        super().__init__(tmp, say)
        self.server = NatsServer(tmp / "js")
        self.roles = [("commands", "commands"), ("projection", "projection"),
                      ("spendcap", "spendcap")]  # fmt: skip

    async def start_bus(self) -> None:
        _SERVERS.append(self.server)
        await asyncio.to_thread(self.server.start)
        self.url = self.server.url

    def prepare_store(self) -> None:
        self.settings = Settings(
            store="sqlite",
            sqlite_path=self.tmp / "approvals.db",
            view_sqlite_path=self.tmp / "status.db",
        )
        self.env = {
            "APPROVALS_STORE": "sqlite",
            "APPROVALS_SQLITE_PATH": str(self.settings.sqlite_path),
            "APPROVALS_VIEW_SQLITE_PATH": str(self.settings.view_sqlite_path),
        }
        bootstrap_workspace(self.settings, WORKSPACE, BENCH_WORKSPACE)

    def server_pids(self) -> dict[str, int]:
        process = self.server._process
        return {"nats-server": process.pid} if process is not None else {}

    def close_bus(self) -> None:
        self.server.stop()
        with contextlib.suppress(ValueError):
            _SERVERS.remove(self.server)

    def describe(self) -> str:
        return "1 nats-server, SQLite store and view; commands, projection, spendcap"


class ClusterStack(Stack):
    label = "cluster+PostgreSQL"
    replicas = 3

    def __init__(self, tmp: Path, say: Callable[[str], None], dsn: str) -> None:
        super().__init__(tmp, say)
        self.dsn = dsn
        self.cluster = NatsCluster(tmp / "cluster", size=3)
        suffix = secrets.token_hex(4)
        self.store_schema = f"load_{suffix}"
        self.view_schema = f"load_{suffix}_view"
        self.roles = [("commands-1", "commands"), ("commands-2", "commands"),
                      ("projection", "projection"), ("spendcap", "spendcap")]  # fmt: skip

    async def start_bus(self) -> None:
        _SERVERS.append(self.cluster)
        await asyncio.to_thread(self.cluster.start)
        self.url = self.cluster.url

    def prepare_store(self) -> None:
        for schema in (self.store_schema, self.view_schema):
            _SCHEMAS.append((self.dsn, schema))
        self.settings = Settings(
            store="postgres",
            postgres_dsn=self.dsn,
            postgres_schema=self.store_schema,
            view_postgres_schema=self.view_schema,
        )
        self.env = {
            "APPROVALS_STORE": "postgres",
            "APPROVALS_POSTGRES_DSN": self.dsn,
            "APPROVALS_POSTGRES_SCHEMA": self.store_schema,
            "APPROVALS_VIEW_POSTGRES_SCHEMA": self.view_schema,
        }
        # The view's schema too (the projection creates its tables in it, not the schema).
        from approvals.services.approvals.store import postgres_env

        postgres_env(self.dsn, self.view_schema)
        bootstrap_workspace(self.settings, WORKSPACE, BENCH_WORKSPACE)

    def server_pids(self) -> dict[str, int]:
        pids = {}
        for i, node in enumerate(self.cluster.nodes):
            if node._process is not None:
                pids[f"nats-server-{i}"] = node._process.pid
        return pids

    def close_bus(self) -> None:
        self.cluster.stop()
        with contextlib.suppress(ValueError):
            _SERVERS.remove(self.cluster)

    def close_store(self) -> None:
        for schema in (self.store_schema, self.view_schema):
            if (self.dsn, schema) in _SCHEMAS:
                try:
                    drop_schema(self.dsn, schema)
                except Exception as error:
                    self.say(f"could not drop schema {schema}: {error}")

    def describe(self) -> str:
        return (
            "3 nats-servers (R3 streams and buckets), PostgreSQL store and view; "
            "2 x commands, projection, spendcap"
        )


# -- verification ---------------------------------------------------------------------------------


async def stream_messages(nc: Client, expected: int, within_s: float = 60.0) -> list[Msg]:
    """Every message of the stream, in order (an ordered consumer from the first)."""
    messages: list[Msg] = []
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        messages.append(msg)
        if len(messages) >= expected:
            done.set()

    if expected == 0:
        return messages
    sub = await nc.jetstream().subscribe(
        EVENTS_WILDCARD, stream=STREAM, cb=on_message, ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(within_s):
            await done.wait()
    except TimeoutError:
        raise BenchFailure(
            f"read {len(messages)} of {expected} stream messages in {within_s:.0f} s"
        ) from None
    finally:
        with contextlib.suppress(NatsError):
            await sub.unsubscribe()
    return messages


async def verify(stack: Stack, load: Load, ready_checks: int) -> dict[str, int]:
    """The stream is the store's log; the view holds what the store holds; nothing acknowledged
    is missing. Raises BenchFailure listing what differs."""
    assert stack.app is not None
    assert stack.nc is not None
    app = stack.app

    def read_log() -> list[Any]:
        log: list[Any] = []
        while batch := app.notifications((log[-1].id + 1) if log else 1, 10_000):
            log.extend(batch)
        return log

    log = await asyncio.to_thread(read_log)
    info = await stack.nc.jetstream().stream_info(STREAM)
    problems: list[str] = []
    if info.state.messages != len(log):
        problems.append(f"the stream holds {info.state.messages} messages, the store {len(log)}")
    messages = await stream_messages(stack.nc, min(info.state.messages, len(log)))
    for i, (notification, msg) in enumerate(zip(log, messages, strict=False), start=1):
        headers = msg.headers or {}
        wanted_id = f"{notification.originator_id}:{notification.originator_version}"
        if (
            msg.metadata.sequence.stream != i
            or headers.get(NOTIFICATION_ID_HEADER) != str(notification.id)
            or headers.get(MSG_ID_HEADER) != wanted_id
            or msg.data != notification.state
        ):
            problems.append(
                f"stream message {msg.metadata.sequence.stream} is not notification "
                f"{notification.id} ({wanted_id}): {headers}"
            )
            if len(problems) > 5:
                break
    requested = {str(n.originator_id) for n in log if n.topic.endswith(":Requested")}
    approved = {str(n.originator_id) for n in log if n.topic.endswith(":Approved")}
    if missing := load.acked_requests - requested:
        problems.append(
            f"{len(missing)} acknowledged requests not in the store: {sorted(missing)[:3]}"
        )
    if missing := load.acked_decisions - approved:
        problems.append(
            f"{len(missing)} acknowledged approvals not in the store: {sorted(missing)[:3]}"
        )
    msg = await stack.nc.request(QUERY_SUBJECTS["count"], COUNT_BODY, timeout=REPLY_TIMEOUT_S)
    counts = _count_reply.decode(msg.data)
    if counts.total != len(requested):
        problems.append(f"the view counts {counts.total} approvals, the store {len(requested)}")
    if counts.counts.get("approved", 0) != len(approved):
        problems.append(
            f"the view counts {counts.counts.get('approved', 0)} approved, the store "
            f"{len(approved)}"
        )
    if counts.total < len(load.acked_requests) + ready_checks:
        problems.append(
            f"the view counts {counts.total} approvals, fewer than the "
            f"{len(load.acked_requests) + ready_checks} acknowledged"
        )
    if problems:
        raise BenchFailure(
            "the store, the stream and the view disagree:\n  " + "\n  ".join(problems)
        )
    return {
        "events": len(log),
        "stream_messages": info.state.messages,
        "approvals": len(requested),
        "approved": len(approved),
        "view_total": counts.total,
        "last_notification_id": log[-1].id if log else 0,
    }


# -- one target -----------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    label: str
    setup: str
    skipped: str | None = None
    seconds: float = 0.0  # first send to last reply
    ok: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    lag: dict[str, Any] = field(default_factory=dict)
    drain_s: float = math.nan
    verified: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the load
    samples: list[dict[str, Any]] = field(default_factory=list)


async def run_target(stack: Stack, args: argparse.Namespace, target: str) -> Result:
    say = stack.say
    result = Result(target=target, label=stack.label, setup=stack.describe())
    try:
        say(f"[{target}] starting the bus, the store and {len(stack.roles)} service processes ...")
        started = clock()
        await stack.start()
        say(f"[{target}] ready after {clock() - started:.1f} s")
        assert stack.app is not None
        assert stack.view is not None
        assert stack.nc is not None
        probe = Probe(stack.nc, stack.app, stack.view)
        await probe.wait_drained(clock(), args.drain_timeout)  # start from an idle system
        load = Load()
        load_nc = await nats.connect(
            stack.url.split(","), connect_timeout=5, max_reconnect_attempts=20,
            reconnect_time_wait=0.2,
        )  # fmt: skip
        samples: list[Sample] = []
        pids = stack.pids()
        try:
            say(f"[{target}] {args.clients} clients for {args.seconds} s ...")
            cpu_before = {role: _cpu_seconds(pid) for role, pid in pids.items()}
            load.started = t0 = clock()
            sampling = asyncio.create_task(sampler(probe, t0, args.sample, samples))
            deadline = t0 + args.seconds
            try:
                await asyncio.gather(
                    *(
                        client(load_nc, c, deadline, load, args.decide_ratio, args.queries)
                        for c in range(args.clients)
                    )
                )
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            wall = clock() - t0
            cpu = {r: 100 * (_cpu_seconds(p) - cpu_before[r]) / wall for r, p in pids.items()}
        finally:
            await load_nc.close()
        end = await probe.sample(t0)  # the lag as the load stopped
        samples.append(end)
        say(f"[{target}] load done; waiting for the lag to reach 0 ...")
        drain_s, drained = await probe.wait_drained(t0, args.drain_timeout, load.last_reply)
        samples.append(drained)
        say(f"[{target}] drained in {drain_s:.2f} s; checking store, stream and view ...")
        result.verified = await verify(stack, load, ready_checks=1)
    except BenchFailure as failure:
        raise BenchFailure(f"[{target}] {failure}\n{stack.tails()}") from None
    finally:
        say(f"[{target}] stopping ...")
        await stack.close()
    seconds = load.last_reply - load.started
    result.seconds = seconds
    result.ok, result.errors, result.error_samples = load.ok, load.errors, load.error_samples
    result.rates = {kind: load.ok[kind] / seconds for kind in KINDS}
    result.rates["total"] = sum(load.ok.values()) / seconds
    result.latency_ms = {k: latency_stats(v) for k, v in load.latencies.items()}
    consumer_names = sorted({name for s in samples for name in s.consumers})
    result.lag = {
        "consumer_max": max((s.consumer_lag for s in samples), default=0),
        "consumer_at_end": end.consumer_lag,
        "per_consumer_max": {
            name: max(s.consumers.get(name, 0) for s in samples) for name in consumer_names
        },
        "projection_max": max((s.projection_lag for s in samples), default=0),
        "projection_at_end": end.projection_lag,
        "relay_max": max((s.relay_lag for s in samples), default=0),
        "relay_at_end": end.relay_lag,
        "samples": len(samples),
    }
    result.drain_s = drain_s
    result.cpu = cpu
    result.samples = [asdict(s) for s in samples]
    return result


# -- output ---------------------------------------------------------------------------------------


def machine_info(postgres: str | None) -> dict[str, Any]:
    return {
        "code": code_version(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats_server": nats_server_version(),
        "postgres": postgres,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _cell(result: dict[str, Any], row: str) -> str:
    if result["skipped"]:
        return "skipped"
    lat = result["latency_ms"]
    lag = result["lag"]

    def p(kind: str) -> str:
        if kind not in lat:
            return "-"
        return f"{lat[kind]['p50']:.1f} / {lat[kind]['p99']:.1f}"

    errors = sum(result["errors"].values())
    by_kind = ", ".join(f"{k} {v}" for k, v in result["errors"].items() if v)
    cells = {
        "requests/s": f"{result['rates']['request']:,.0f}",
        "decisions/s": f"{result['rates']['decision']:,.0f}",
        "queries/s": f"{result['rates']['query']:,.0f}",
        "total ops/s": f"{result['rates']['total']:,.0f}",
        "request p50 / p99 ms": p("request"),
        "decision p50 / p99 ms": p("decision"),
        "query p50 / p99 ms": p("query"),
        "  get p50 / p99 ms": p("get"),
        "  list p50 / p99 ms": p("list"),
        "  count p50 / p99 ms": p("count"),
        "consumer lag max / end (events)": f"{lag['consumer_max']:,} / {lag['consumer_at_end']:,}",
        "projection lag max / end (events)": (
            f"{lag['projection_max']:,} / {lag['projection_at_end']:,}"
        ),
        "relay lag max / end (events)": f"{lag['relay_max']:,} / {lag['relay_at_end']:,}",
        "drain time s": f"{result['drain_s']:.2f}",
        "errors": f"{errors} ({by_kind})" if errors else "0",
        "events stored (= on stream)": f"{result['verified']['events']:,}",
        "ops counted": f"{sum(result['ok'].values()):,} in {result['seconds']:.1f} s",
    }
    return cells[row]


ROWS = (
    "requests/s",
    "decisions/s",
    "queries/s",
    "total ops/s",
    "request p50 / p99 ms",
    "decision p50 / p99 ms",
    "query p50 / p99 ms",
    "  get p50 / p99 ms",
    "  list p50 / p99 ms",
    "  count p50 / p99 ms",
    "consumer lag max / end (events)",
    "projection lag max / end (events)",
    "relay lag max / end (events)",
    "drain time s",
    "errors",
    "events stored (= on stream)",
    "ops counted",
)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine      {m['cores']} cores {m['cpu']}, python {m['python']}, {m['nats_server']}"
        + (f", PostgreSQL {m['postgres']}" if m["postgres"] else ""),
        "load average "
        + " ".join(f"{x:.2f}" for x in m["load_average_before"])
        + f" (before the run), code {m['code']}",
        f"traffic      {report['clients']} clients x {report['seconds']} s per target; "
        f"approve ratio {report['decide_ratio']}, {report['queries']} queries per request",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['target']:12} {('skipped: ' + r['skipped']) if r['skipped'] else r['setup']}"
        )
    lines.append("")
    results = report["results"]
    widths = [max(len(r["label"]), 20) + 2 for r in results]
    header = f"{'measure':36}" + "".join(
        f"{r['label']:>{w}}" for r, w in zip(results, widths, strict=True)
    )
    lines += [header, "-" * len(header)]
    for row in ROWS:
        lines.append(
            f"{row:36}"
            + "".join(f"{_cell(r, row):>{w}}" for r, w in zip(results, widths, strict=True))
        )
    lines.append("")
    for r in results:
        if r["skipped"]:
            continue
        cpu = ", ".join(f"{role} {pct:.0f}%" for role, pct in r["cpu"].items())
        lines.append(f"CPU (% of one core) {r['target']}: {cpu}")
        per = ", ".join(f"{k} {v:,}" for k, v in r["lag"]["per_consumer_max"].items())
        lines.append(f"max lag per consumer {r['target']}: {per}")
        for sample in r["error_samples"]:
            lines.append(f"error sample {r['target']}: {sample}")
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    postgres: str | None = None
    results: list[Result] = []
    makers: dict[str, Callable[[], Awaitable[Stack | str]]] = {}

    async def cluster() -> Stack | str:
        nonlocal postgres
        try:
            postgres = await asyncio.to_thread(postgres_version, args.postgres_dsn)
        except Exception as error:
            reason = " ".join(str(error).split())
            return f"PostgreSQL at {safe_dsn(args.postgres_dsn)} is unreachable ({reason})"
        return ClusterStack(tmp / "cluster", say, args.postgres_dsn)

    async def embedded() -> Stack | str:
        return EmbeddedStack(tmp / "embedded", say)

    makers = {"cluster": cluster, "embedded": embedded}
    for target in args.targets:
        made = await makers[target]()
        if isinstance(made, str):
            say(f"[{target}] skipped: {made}")
            label = ClusterStack.label if target == "cluster" else EmbeddedStack.label
            results.append(Result(target=target, label=label, setup="", skipped=made))
            continue
        made.tmp.mkdir(parents=True, exist_ok=True)
        results.append(await run_target(made, args, target))
    return {
        "machine": machine_info(postgres),
        "seconds": args.seconds,
        "clients": args.clients,
        "decide_ratio": args.decide_ratio,
        "queries": args.queries,
        "results": [asdict(r) for r in results],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per target (20)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument(
        "--decide-ratio", type=float, default=0.5, help="share of requests approved (0.5)"
    )
    parser.add_argument(
        "--queries", type=float, default=2.0, help="queries per request, on average (2)"
    )
    parser.add_argument(
        "--targets",
        default="cluster,embedded",
        help="comma-separated: cluster, embedded (both, in this order)",
    )
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("APPROVALS_TEST_POSTGRES_DSN")
        or "postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL for the cluster target (APPROVALS_TEST_POSTGRES_DSN, else "
        "postgresql://postgres@127.0.0.1:5432/test); unreachable: the target is skipped",
    )
    parser.add_argument(
        "--sample", type=float, default=0.5, help="seconds between lag samples (0.5)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds the lag has to reach 0 after the load, else the run fails (60)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or not set(args.targets) <= {"cluster", "embedded"}:
        parser.error("--targets takes cluster, embedded or both")
    if args.seconds <= 0 or args.clients < 1 or args.sample <= 0:
        parser.error("need --seconds > 0, --clients >= 1, --sample > 0")
    if not 0 <= args.decide_ratio <= 1 or args.queries < 0:
        parser.error("need 0 <= --decide-ratio <= 1 and --queries >= 0")
    return args


def last_resort_cleanup() -> None:
    """Whatever a signal left behind: kill the processes, stop the servers, drop the schemas."""
    for process in list(_PROCESSES):
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(5)
    _PROCESSES.clear()
    for server in list(_SERVERS):
        with contextlib.suppress(Exception):
            server.stop()
    _SERVERS.clear()
    for dsn, schema in list(_SCHEMAS):
        with contextlib.suppress(Exception):
            drop_schema(dsn, schema)
    _SCHEMAS.clear()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        print(f"\ninterrupted ({signal.Signals(signum).name}): cleaning up", file=sys.stderr)
        raise SystemExit(128 + signum)  # unwinds through every clean-up below

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        with temporary_directory() as tmp:
            try:
                report = asyncio.run(run(args, tmp))
            finally:
                last_resort_cleanup()
    except BenchFailure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
