"""Audit: replay and verify over a large store, against the raw notification-log read rate.

    .venv/bin/python benchmarks/bench_audit.py [--events 1000000] [--store PATH] [--json]

1. A SQLite event store (our configuration: WAL, ``synchronous=FULL``) with at least --events
   events, written through the command service's own ``Approvals.handle_batch``: approvals in
   two workspaces spread over 400 days (daily budgets), each requested, spend-checked, delivered
   to the inbox, then approved (credits reserved), redeemed and reported (credits settled), or
   rejected, expired or cancelled; hash-chained like any stored event. With --store PATH the
   file is kept and reused by later runs (it is built once; about 2 minutes for a million).
2. Raw baseline, in this run, on this store: ``recorder.select_notifications`` over the whole log
   in sections of 500 (the rate the issue quotes) and of 5,000 (the section replay reads), doing
   nothing with the notifications.
3. Replay of everything (``approvals.services.audit.replay``: every event decoded, upcast where
   old, and folded into its aggregate by the command service's own evolution), sections of 5,000.
4. Verify (``approvals.services.audit.verify``): every event's chain link and the log hash,
   checked
   against a checkpoint signed at the end of the log, as ``approvals audit verify`` does.

Progress goes to stderr; the table (or JSON) to stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from approvals.schemas import commands
from approvals.schemas.audit import Checkpoint, CheckpointBody
from approvals.schemas.workspace import Budget, Member, WorkspaceSettings
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.checkpointer import LogHash
from approvals.services.approvals.notification_log import SECTION, store_sections
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.store import store_env
from approvals.services.audit.replay import Replay, replay_all
from approvals.services.audit.source import bulk
from approvals.services.audit.verify import Verifier
from approvals.services.runtime.settings import Settings

WORKSPACES = ("acme", "globex")
SETTINGS = WorkspaceSettings(
    members={
        "user:admin": Member(roles=("admin",)),
        **{f"service:agent{i}": Member(roles=("requester",)) for i in range(5)},
        "user:ana": Member(roles=("approver",)),
        "user:bo": Member(roles=("approver",)),
    },
    budget=Budget(cap=10_000_000, period="day", max_per_run=1000),
)
START = datetime(2025, 1, 1, tzinfo=UTC)
CHUNK = 250  # approvals written together (one batch per step)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def request(i: int) -> commands.Request:
    return commands.Request(
        requested_by=f"service:agent{i % 5}",
        skill_name=f"skill-{i % 7}",
        skill_execution_id=f"exec-{i}",
        title=f"Enrich rows batch {i}",
        summary="Runs a paid enrichment over 100 rows",
        risk_level=("low", "medium", "high", "critical")[i % 4],
        action=commands.Action(
            kind="provider_call", mode="live", provider="clearbit", max_credits=float(50 + i % 100)
        ),
        via=commands.Via(channel="api", auth="api_key", ref="benchkey0001"),
    )


def build(app: Approvals, events: int) -> None:
    """Write approvals until the store holds at least ``events`` events."""
    rng = random.Random(8)
    for workspace in WORKSPACES:
        if app.workspace(workspace) is None:
            app.handle(
                workspace,
                commands.Configure(settings=SETTINGS, by="user:admin"),
                now=START - timedelta(days=1),
            )
    i = 0
    step = timedelta(days=400) * CHUNK / (events / 6.5)  # spread the approvals over 400 days
    now = START
    started = time.perf_counter()
    while (head := app.last_notification_id()) < events:
        workspace = WORKSPACES[(i // CHUNK) % 2]
        handled = app.handle_batch([(workspace, request(i + k)) for k in range(CHUNK)], now)
        pending = [r.approval for r in handled.results if not isinstance(r, Exception)]
        ids = [a.id for a in pending if a is not None]
        i += CHUNK
        now += timedelta(seconds=1)
        app.handle_batch([(workspace, commands.CheckSpend(approval_id=a)) for a in ids], now)
        app.handle_batch(
            [
                (workspace, commands.Deliver(approval_id=a, channel="inbox", target="inbox"))
                for a in ids
            ],
            now,
        )
        decisions: list[tuple[str, commands.Command]] = []
        approved = []
        for approval in pending:
            assert approval is not None
            roll = rng.random()
            if roll < 0.80:
                approved.append(approval.id)
                decisions.append(
                    (
                        workspace,
                        commands.Approve(
                            approval_id=approval.id,
                            approver="user:ana",
                            digest=approval.request.digest,
                            via=commands.Via(channel="web", auth="session", ref="link"),
                        ),
                    )
                )
            elif roll < 0.92:
                decisions.append(
                    (
                        workspace,
                        commands.Reject(
                            approval_id=approval.id, approver="user:bo", reason="not this week"
                        ),
                    )
                )
            elif roll < 0.97:
                decisions.append(
                    (
                        workspace,
                        commands.Cancel(approval_id=approval.id, by=approval.request.requested_by),
                    )
                )
        decided_at = now + timedelta(seconds=rng.randint(30, 7200))
        app.handle_batch(decisions, decided_at)
        later = decided_at + timedelta(seconds=60)
        redeems = [
            (
                workspace,
                commands.Redeem(
                    approval_id=a.id, digest=a.request.digest, executor=a.request.requested_by
                ),
            )
            for a in pending
            if a is not None and a.id in set(approved)
        ]
        app.handle_batch(redeems, later)  # type: ignore[arg-type]
        reports = [
            (
                workspace,
                commands.Report(
                    approval_id=cmd.approval_id,
                    by=cmd.executor,
                    credits_used=float(rng.randint(0, 50)),
                    outcome="succeeded",
                ),
            )
            for _, cmd in redeems
        ]
        app.handle_batch(reports, later + timedelta(seconds=30))  # type: ignore[arg-type]
        now += step
        if i % (CHUNK * 40) == 0:
            rate = head / (time.perf_counter() - started)
            say(f"  building the store: {head:,} of {events:,} events ({rate:,.0f}/s)")


def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def raw_read(app: Approvals, section: int) -> int:
    """The library's own read of the notification log: the baseline."""
    count, start = 0, 1
    while page := app.recorder.select_notifications(start=start, limit=section):
        count += len(page)
        start = page[-1].id + 1
    return count


def lean_read(app: Approvals) -> int:
    """Replay's own read (the columns it needs, as plain rows), doing nothing with them."""
    return sum(len(page) for page in store_sections(app))


def replay(app: Approvals) -> Replay:
    return replay_all(store_sections(app), Replay())


def verify(app: Approvals, checkpoint: Checkpoint) -> Any:
    verifier = Verifier([checkpoint])
    with bulk():
        for page in store_sections(app):
            verifier.feed(page)
    return verifier.finish("store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, help="keep the store here and reuse it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "audit.db"
        app = Approvals(store_env(Settings(sqlite_path=path)))
        try:
            head = app.last_notification_id()
            if head < args.events:
                say(f"building a store of {args.events:,} events at {path} (it has {head:,})")
                build(app, args.events)
            total = app.last_notification_id()
            say(f"the store holds {total:,} events; measuring")
            figures: dict[str, Any] = {"events": total}
            for section in (500, SECTION):
                seconds, count = timed(lambda s=section: raw_read(app, s))
                assert count == total, (count, total)
                figures[f"raw_{section}"] = count / seconds
                say(f"  raw read, sections of {section}: {count / seconds:,.0f} events/s")
            seconds, count = timed(lambda: lean_read(app))
            figures["lean"] = count / seconds
            say(f"  replay's own read, sections of {SECTION}: {count / seconds:,.0f} events/s")
            seconds, done = timed(lambda: replay(app))
            assert done.events == total, (done.events, total)
            figures["replay"] = total / seconds
            say(f"  replay: {total / seconds:,.0f} events/s")
            signer = Signer.generate()
            sealed = LogHash()
            seconds, _ = timed(lambda: sealed.advance(app, total))
            figures["seal_s"] = seconds
            body = CheckpointBody(
                key_id=signer.key_id,
                position=sealed.position,
                events=sealed.events,
                log_hash=sealed.log_hash,
                at=datetime.now(UTC),
            )
            checkpoint = Checkpoint(
                **msgspec.structs.asdict(body), signature=signer.signature(body)
            )
            seconds, verification = timed(lambda: verify(app, checkpoint))
            assert verification.ok, verification
            figures["verify_s"] = seconds
            say(f"  verify: {seconds:.1f} s")
        finally:
            app.close()
    report(figures, args.json)


def report(figures: dict[str, Any], as_json: bool) -> None:
    raw = figures[f"raw_{SECTION}"]
    figures["replay_ratio"] = figures["replay"] / raw
    figures["replay_ratio_500"] = figures["replay"] / figures["raw_500"]
    if as_json:
        print(json.dumps(figures))
        return
    print(f"| measure ({figures['events']:,} events, SQLite) | figure | ratio to raw read |")
    print("|---|---|---|")
    raw_500 = figures["raw_500"]
    print(f"| raw notification-log read, sections of 500 | {raw_500:,.0f} events/s | 1.00 |")
    print(f"| raw notification-log read, sections of {SECTION:,} | {raw:,.0f} events/s | 1.00 |")
    print(
        f"| replay's own read (columns it needs, plain rows), sections of {SECTION:,} | "
        f"{figures['lean']:,.0f} events/s | {figures['lean'] / raw:.2f}x |"
    )
    print(
        f"| replay of everything, sections of {SECTION:,} | {figures['replay']:,.0f} events/s | "
        f"{figures['replay_ratio']:.2f}x ({figures['replay_ratio_500']:.2f}x of the 500 rate) |"
    )
    print(f"| seal the whole log (a checkpointer's first start) | {figures['seal_s']:.1f} s | |")
    print(f"| verify every link and the signed checkpoint | {figures['verify_s']:.1f} s | |")


if __name__ == "__main__":
    main()
