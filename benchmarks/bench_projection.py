"""The status projection: catch-up rate, query latency at 100,000 approvals, decision visibility.

    .venv/bin/python benchmarks/bench_projection.py [--approvals 100000] [--decisions 200] [--json]

One run, everything on 127.0.0.1 in a temporary directory removed at the end:

1. baseline: the raw SQLite insert rate of the same view rows (the rows and timeline entries the
   projection writes for these events, pre-built, ``executemany`` in transactions of 1,000, WAL,
   ``synchronous=FULL``), measured in this run;
2. --approvals requests (a fifth of them approved) written to a fresh event store and relayed to
   a real nats-server; then ``approvals serve --only projection`` starts in its own process on an
   empty view and the benchmark times its catch-up to the store's last event. Beside it, what
   bounds it: the same stream read by a push consumer that writes nothing (nats-py alone, in
   this process), and the view rebuilt from the store with no bus (the writer alone);
3. ``get`` and ``list`` (50 rows, filtered by status) over NATS against that view, sequentially;
4. with ``approvals serve`` (commands and projection) running, --decisions approvals: the time
   from the ``approve`` reply to the answer of a ``get`` with ``min_version`` of the decision, and
   to the answer of a ``wait`` that was already waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api

from approvals.projections.status import rebuild
from approvals.projections.status.rows import fold
from approvals.projections.status.storage import open_view
from approvals.projections.status.view import COLUMNS, _to_row, create_statements, timestamp
from approvals.schemas import commands
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.events import Event
from approvals.schemas.subjects import EVENTS_WILDCARD, NOTIFICATION_ID_HEADER, STREAM
from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.relay import Relay
from approvals.services.approvals.store import store_env
from approvals.services.dev import bootstrap_workspace
from approvals.services.runtime.natsserver import NatsServer
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client

APPROVALS_BIN = str(Path(sys.executable).parent / "approvals")

# The benchmark's workspace: the requester asks, ana approves, one approval at every risk level.
BENCH_WORKSPACE = WorkspaceSettings(
    members={
        "user:admin": Member(roles=("admin",)),
        "service:bench": Member(roles=("requester",)),
        "user:ana": Member(roles=("approver",)),
    }
)


def a_request(i: int) -> commands.Request:
    return commands.Request(
        requested_by="service:bench",
        skill_name=f"skill-{i % 7}",
        skill_execution_id=f"exec-{i}",
        title=f"Enrich rows batch {i}",
        summary="Runs a paid enrichment over 100 rows",
        risk_level=("low", "medium", "high", "critical")[i % 4],
        action=commands.Action(
            kind="provider_call", mode="live", provider="clearbit", max_credits=100
        ),
    )


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": pick(0.50) * 1000, "p99_ms": pick(0.99) * 1000, "n": len(ordered)}


def write_store(app: Approvals, approvals: int) -> int:
    for start in range(0, approvals, 1000):
        handled = app.handle_batch(
            [("acme", a_request(i)) for i in range(start, min(start + 1000, approvals))]
        )
        approved = [
            ("acme", commands.Approve(approval_id=r.approval.id, approver="user:ana",
                                      digest=r.approval.request.digest))
            for r in handled.results[::5]
            if not isinstance(r, Exception) and r.approval is not None
        ]  # fmt: skip
        app.handle_batch(approved)
    return app.last_notification_id()


def raw_insert_rate(app: Approvals, path: Path) -> float:
    """The same rows the projection writes, inserted with no projection logic at all."""
    notifications = app.notifications(1, 10_000_000)
    rows: dict[Any, Any] = {}
    timeline = []
    for n in notifications:
        event = event_decoder.decode(n.state)
        if not isinstance(event, Event):  # a workspace's settings: no row
            continue
        rows[event.approval_id] = fold(rows.get(event.approval_id), event)
        timeline.append(
            (str(event.approval_id), event.version, n.id, event.event_type, event.actor,
             timestamp(event.occurred_at), n.state.decode())
        )  # fmt: skip
    row_tuples = [_to_row(row) for row in rows.values()]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for statement in create_statements("status_approvals", "status_timeline", "REAL"):
        db.execute(statement)
    marks = ", ".join("?" * len(COLUMNS))
    started = time.perf_counter()
    for i in range(0, len(timeline), 1000):
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO status_approvals VALUES ({marks})", row_tuples[i : i + 1000])
        db.executemany(
            "INSERT INTO status_timeline VALUES (?, ?, ?, ?, ?, ?, ?)", timeline[i : i + 1000]
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(timeline) / elapsed


def writer_alone_rate(app: Approvals, path: Path) -> float:
    """The view rebuilt from the store (``approvals rebuild``'s way): the writer with no bus."""
    view = open_view(Settings(view_sqlite_path=path))
    started = time.perf_counter()
    done = rebuild.from_store(app, view)
    return done / (time.perf_counter() - started)


async def bus_alone_rate(nc: Client, batch: int = 4000) -> float:
    """The stream pushed the way the projector takes it (two batches unacknowledged, one
    ``AckAll`` per batch, the notification id read) with nothing decoded or written."""
    js = nc.jetstream()
    total = (await js.stream_info(STREAM)).state.messages
    received, finished = 0, asyncio.Event()

    async def on_message(msg: Any) -> None:
        nonlocal received
        int(msg.headers[NOTIFICATION_ID_HEADER])
        received += 1
        if received % batch == 0 or received == total:
            await msg.ack()
        if received == total:
            finished.set()

    subscription = await nc.subscribe("_bench.bus-alone", cb=on_message,
                                      pending_msgs_limit=4 * batch)  # fmt: skip
    started = time.perf_counter()
    await js.add_consumer(
        STREAM,
        api.ConsumerConfig(
            durable_name="bench-bus-alone",
            deliver_subject="_bench.bus-alone",
            ack_policy=api.AckPolicy.ALL,
            max_ack_pending=2 * batch,
            filter_subject=EVENTS_WILDCARD,
        ),
    )
    await asyncio.wait_for(finished.wait(), 600)
    rate = total / (time.perf_counter() - started)
    await subscription.unsubscribe()
    await js.delete_consumer(STREAM, "bench-bus-alone")
    return rate


@contextlib.contextmanager
def serving(url: str, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [APPROVALS_BIN, "--nats-url", url, "serve", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


async def until(check: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


async def request(nc: Client, subject: str, body: Any) -> dict[str, Any]:
    reply = json.loads((await nc.request(subject, encoder.encode(body), timeout=10)).data)
    if not reply.get("ok"):
        raise RuntimeError(f"{subject}: {reply}")
    return reply  # type: ignore[no-any-return]


async def query_latencies(nc: Client, ids: list[str], rounds: int) -> dict[str, Any]:
    gets, lists = [], []
    for i in range(rounds):
        started = time.perf_counter()
        await request(nc, "approvals.query.acme.get", {"approval_id": ids[i * 7919 % len(ids)]})
        gets.append(time.perf_counter() - started)
        started = time.perf_counter()
        page = await request(nc, "approvals.query.acme.list", {"status": "pending", "limit": 50})
        lists.append(time.perf_counter() - started)
        assert len(page["items"]) == 50
    return {"get": percentiles(gets), "list": percentiles(lists)}


async def decision_visibility(nc: Client, decisions: int, first: int = 0) -> dict[str, Any]:
    to_get, to_wait = [], []
    for i in range(first, first + decisions):
        made = await request(nc, "approvals.cmd.acme.request", msgspec_body(i))
        approval = made["approval"]
        body = {"approval_id": approval["id"]}
        await request(nc, "approvals.query.acme.get", {**body, "min_version": 1})
        waiting = asyncio.create_task(
            request(nc, "approvals.query.acme.wait", {**body, "timeout_s": 30})
        )
        await asyncio.sleep(0.01)  # let the wait reach the service before the decision
        approve = {**body, "approver": "user:ana", "digest": approval["digest"]}
        approved = await request(nc, "approvals.cmd.acme.approve", approve)
        replied = time.perf_counter()
        # The decision's own version: other consumers (the spend check, delivery) add events
        # before it, so a fixed version would time one of theirs instead.
        decided = approved["approval"]["version"]
        got = await request(nc, "approvals.query.acme.get", {**body, "min_version": decided})
        to_get.append(time.perf_counter() - replied)
        assert got["approval"]["status"] == "approved"
        waited = await waiting
        to_wait.append(time.perf_counter() - replied)
        assert waited["approval"]["status"] == "approved"
    return {"get": percentiles(to_get), "wait": percentiles(to_wait)}


async def visibility_stage(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], float]:
    """Every service of ``approvals serve`` on a store of their own making, measured quiet.

    Not on the store written above: its requests were written behind the services' backs, so
    the spend-cap and delivery services would first check and deliver every one of them (some
    200 approvals a second), and the decisions would be timed behind that backlog."""
    settings = Settings(sqlite_path=tmp / "approvals.db", view_sqlite_path=tmp / "status.db")
    env = {"APPROVALS_SQLITE_PATH": str(settings.sqlite_path),
           "APPROVALS_VIEW_SQLITE_PATH": str(settings.view_sqlite_path)}  # fmt: skip
    bootstrap_workspace(settings, "acme", BENCH_WORKSPACE)
    with NatsServer(tmp / "jetstream") as server:
        nc = await nats.connect(server.url)
        with serving(server.url, env):
            await answering(nc, "approvals.cmd.acme.approve")
            await answering(nc, "approvals.query.acme.count")
            await decision_visibility(nc, 20, first=-1000)  # warm up, unmeasured
            started = time.perf_counter()
            await settled(nc)
            settled_s = time.perf_counter() - started
            visibility = await decision_visibility(nc, args.decisions)
        await nc.close()
    return visibility, settled_s


async def settled(nc: Client, within_s: float = 120) -> None:
    """Until every consumer of the stream has acknowledged all of it, twice in a row at the
    same last sequence."""
    js = nc.jetstream()
    deadline = time.monotonic() + within_s
    previous = None
    while time.monotonic() < deadline:
        last = (await js.stream_info(STREAM)).state.last_seq
        consumers = await js.consumers_info(STREAM)
        lag = sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers)
        if lag == 0 and previous == last:
            return
        previous = last if lag == 0 else None
        await asyncio.sleep(0.2)
    raise TimeoutError("the consumers did not catch up in time")


def msgspec_body(i: int) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(a_request(1_000_000 + i))  # type: ignore[no-any-return]


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    settings = Settings(sqlite_path=tmp / "approvals.db", view_sqlite_path=tmp / "status.db")
    env = {"APPROVALS_SQLITE_PATH": str(settings.sqlite_path),
           "APPROVALS_VIEW_SQLITE_PATH": str(settings.view_sqlite_path)}  # fmt: skip
    bootstrap_workspace(settings, "acme", BENCH_WORKSPACE)
    app = Approvals(store_env(settings))
    print(f"writing {args.approvals} approvals to the store ...", file=sys.stderr)
    last = write_store(app, args.approvals)
    baseline = raw_insert_rate(app, tmp / "raw.db")
    writer_alone = writer_alone_rate(app, tmp / "rebuilt.db")
    with NatsServer(tmp / "jetstream") as server:
        nc = await nats.connect(server.url)
        relay = Relay(app, nc)
        await relay.start()
        await relay.publish_pending()
        await relay.stop()
        bus_alone = await bus_alone_rate(nc)
        print(f"{last} events on the stream; projecting ...", file=sys.stderr)
        view = open_view(settings)
        with serving(server.url, env, "--only", "projection"):
            await until(lambda: view.position() > 0, 30)
            started, first = time.perf_counter(), view.position()
            await until(lambda: view.position() >= last, 600)
            catch_up = (last - first) / (time.perf_counter() - started)
            ids = [str(a.id) for a in view.list_page("acme", _all_pending(1000))[0]]
            queries = await query_latencies(nc, ids, args.queries)
        await nc.close()
    visibility, settled_s = await visibility_stage(args, tmp / "visibility")
    return {
        "approvals_in_view": args.approvals,
        "events": last,
        "raw_insert_events_per_s": baseline,
        "catch_up_events_per_s": catch_up,
        "catch_up_ratio": catch_up / baseline,
        "bus_alone_events_per_s": bus_alone,
        "bus_alone_ratio": bus_alone / baseline,
        "writer_alone_events_per_s": writer_alone,
        "writer_alone_ratio": writer_alone / baseline,
        "queries": queries,
        "decision_visible": visibility,
        "settled_s": settled_s,
    }


def _all_pending(limit: int) -> Any:
    from approvals.schemas.queries import List

    return List(status="pending", limit=min(limit, 500))


async def answering(nc: Client, subject: str, within_s: float = 30) -> None:
    """Until a service answers on ``subject`` (any reply, even an error, will do)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await nc.request(subject, b"{}", timeout=0.5)
            return
        except (NoRespondersError, NatsTimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def render(report: dict[str, Any]) -> str:
    q, v = report["queries"], report["decision_visible"]

    def rate(name: str, per_s: float, ratio: float) -> str:
        return f"{name:<44}{per_s:>10,.0f} e/s{'':>12}{ratio:>8.2f}x"

    def latency(name: str, figures: dict[str, float]) -> str:
        return f"{name:<44}{figures['p50_ms']:>11.2f} ms{figures['p99_ms']:>9.2f} ms"

    title = f"status projection, {report['approvals_in_view']:,} approvals"
    return "\n".join(
        [
            f"{title} ({report['events']:,} events)",
            "",
            f"{'measure':<44}{'rate or p50':>14}{'p99':>12}{'ratio':>9}",
            rate(
                "raw SQLite insert of the same rows (baseline)",
                report["raw_insert_events_per_s"],
                1.0,
            ),
            rate(
                "projection catch-up over JetStream",
                report["catch_up_events_per_s"],
                report["catch_up_ratio"],
            ),
            rate(
                "  bound: the stream, nothing written (nats-py)",
                report["bus_alone_events_per_s"],
                report["bus_alone_ratio"],
            ),
            rate(
                "  bound: rebuild from the store (no bus)",
                report["writer_alone_events_per_s"],
                report["writer_alone_ratio"],
            ),
            latency("get over NATS", q["get"]),
            latency("list 50 pending over NATS", q["list"]),
            latency("approve reply -> get(min_version) answered", v["get"]),
            latency("approve reply -> waiting wait answered", v["wait"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--approvals", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000, help="get and list rounds")
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-projection-"))
    try:
        report = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
