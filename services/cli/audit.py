"""Audit: history, replay, export, report, verify and checkpoints.

They read the event store named by the settings (APPROVALS_STORE, APPROVALS_SQLITE_PATH or
APPROVALS_POSTGRES_DSN), or, where an auditor has no database access, the JetStream stream or an
export file. Progress goes to stderr; the result to stdout (JSON with --json).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from uuid import UUID

import click
import msgspec
import nats

from approvals.schemas.audit import (
    Checkpoint,
    Comparison,
    Difference,
    Replayed,
    Report,
    Verification,
)
from approvals.schemas.codec import encoder
from approvals.schemas.queries import ListReply
from approvals.services.approvals.checkpointer import checkpoint_decoder
from approvals.services.approvals.notification_log import store_sections
from approvals.services.audit import export as exporting
from approvals.services.audit import report as reporting
from approvals.services.audit.checkpoints import all_checkpoints, check_checkpoints
from approvals.services.audit.history import history as approval_history
from approvals.services.audit.replay import Replay, approval_state
from approvals.services.audit.source import bulk, export_sections, stream_sections
from approvals.services.audit.verify import Verifier
from approvals.services.cli import Context, cli, console
from approvals.services.cli.params import WORKSPACE
from approvals.services.cli.receipts import _offline_keys
from approvals.services.client import ApprovalsError, connect_once
from approvals.services.refusals import Refusals
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from click._termui_impl import ProgressBar

    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.notification_log import Record
    from approvals.services.client import ApprovalsClient


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@cli.group()
def audit() -> None:
    """Replay and check the log: who asked, who decided, what ran, and that nobody changed it."""


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(
            "invalid", f"{name} must be an ISO 8601 time, such as 2026-11-30T12:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextlib.contextmanager
def _store() -> Iterator[Approvals]:
    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.store import store_env

    settings = Settings.from_env()
    if settings.store == "sqlite" and not settings.sqlite_path.is_file():
        raise Refused(
            "not_found",
            f"no event store at {settings.sqlite_path} "
            "(set APPROVALS_SQLITE_PATH, or APPROVALS_STORE=postgres)",
        )
    app = Approvals({**store_env(settings), "CREATE_TABLE": "false"})
    try:
        yield app
    finally:
        app.close()


def _progress(
    label: str, total: int, sections: Iterator[Sequence[Record]]
) -> Iterator[Sequence[Record]]:
    """The sections, with a progress bar on stderr (shown on a terminal).

    ``total`` is the last position to read. The bar moves by positions, not by events: the
    store's ids have gaps (a rolled-back insert still used its id), so counting events would
    stop short of the total."""
    bar: ProgressBar[int]
    with click.progressbar(
        length=max(total, 1), label=label, file=sys.stderr, show_pos=True
    ) as bar:
        for section in sections:
            yield section
            if section:
                bar.update(min(section[-1].id, total) - bar.pos)


def _emit(obj: Context, document: msgspec.Struct, text: str) -> None:
    click.echo(encoder.encode(document).decode() if obj.as_json else text)


def _run(obj: Context, work: Any) -> None:
    try:
        sys.exit(work())
    except Refused as refused:
        console.fail(obj.as_json, refused.code, str(refused))
        sys.exit(1)


# -- history -----------------------------------------------------------------------------


@audit.command("history")
@click.argument("approval_id")
@click.pass_obj
def history_command(obj: Context, approval_id: str) -> None:
    """Every event of one approval from the event store, in order: who, through which door,
    what digest, when."""

    def work() -> int:
        try:
            wanted = UUID(approval_id)
        except ValueError:
            raise Refused("invalid", f"{approval_id!r} is not an approval id") from None
        with _store() as app:
            found = approval_history(app, wanted)
        if found is None:
            raise Refused("not_found", f"the store holds no approval {approval_id}")
        lines = [f"approval {found.approval_id} in workspace {found.workspace_id}", ""]
        header = ("pos", "ver", "time", "event", "actor", "via", "digest", "detail")
        rows = [header] + [
            (
                str(e.position),
                f"{e.aggregate[0]}{e.version}",
                e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.type,
                e.actor,
                f"{e.via.channel}/{e.via.auth}" + (f" ({e.via.ref})" if e.via.ref else "")
                if e.via
                else "-",
                (e.digest or "-")[:12],
                e.detail,
            )
            for e in found.entries
        ]
        _emit(obj, found, "\n".join(lines + _columns(rows)))
        return 0

    _run(obj, work)


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


# -- replay ------------------------------------------------------------------------------


@audit.command("replay")
@click.option("--approval", "approval_id", help="One approval (its events and those naming it).")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: everything).")
@click.option("--at", "at_text", help="The state at this time (ISO 8601).")
@click.option("--position", type=click.IntRange(min=0), help="The state after this position.")
@click.option(
    "--source",
    type=click.Choice(["store", "stream"]),
    default="store",
    show_default=True,
    help="The event store, or the JetStream stream (no database).",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Compare the approvals with the live read model (the status projection).",
)
@click.option("--details", is_flag=True, help="List every approval's state.")
@click.pass_obj
def replay_command(
    obj: Context,
    approval_id: str | None,
    workspace: str | None,
    at_text: str | None,
    position: int | None,
    source: Literal["store", "stream"],
    compare: bool,
    details: bool,
) -> None:
    """Rebuild state from the log up to a point in time or position: status, votes, budgets."""

    def work() -> int:
        at = _when(at_text, "--at")
        try:
            wanted = UUID(approval_id) if approval_id else None
        except ValueError:
            raise Refused("invalid", f"{approval_id!r} is not an approval id") from None
        if compare and (at is not None or position is not None):
            raise Refused(
                "invalid", "--compare compares the latest state: leave out --at and --position"
            )
        replay = Replay(workspace=workspace, approval_id=wanted, up_to=position, at=at)
        if source == "store":
            with _store() as app, bulk():
                total = min(app.last_notification_id(), position or sys.maxsize)
                for section in _progress("replaying", total, store_sections(app, up_to=position)):
                    if not replay.feed(section):
                        break
        else:
            asyncio.run(_replay_stream(obj, replay, workspace or "*", str(wanted or "*")))
        result = replay.result(source, details=details)
        if compare:
            comparison = asyncio.run(_compare(obj, replay))
            result = msgspec.structs.replace(result, comparison=comparison)
        _emit(obj, result, _replay_text(result))
        return 0 if result.comparison is None or not result.comparison.differences else 1

    _run(obj, work)


async def _replay_stream(obj: Context, replay: Replay, workspace: str, approval: str) -> None:
    refusals = Refusals()  # a workspace's caller may read its own workspace's events only
    try:
        nc = await connect_once(obj.nats_url, obj.timeout, obj.bus_options(),
                                error_cb=refusals.hear)  # fmt: skip
    except (OSError, TimeoutError, nats.errors.Error) as error:
        raise Refused("unavailable", f"cannot reach {obj.nats_url}: {error!r}") from None

    async def read() -> None:
        with bulk():
            sections = stream_sections(nc, workspace=workspace, approval_id=approval,
                                       up_to=replay.up_to, refusals=refusals)  # fmt: skip
            async for section in sections:
                if not replay.feed(section):
                    break

    try:
        await refusals.guard(read())
    except ApprovalsError as error:
        raise Refused(error.code, error.message) from None
    except (TimeoutError, nats.errors.Error) as error:
        raise Refused("unavailable", f"the stream does not answer ({error!r})") from None
    finally:
        await nc.drain()


async def _compare(obj: Context, replay: Replay) -> Comparison:
    """Every replayed approval against the status projection's view of it (and back)."""

    replayed = {a.id: approval_state(a) for a in replay.approvals()}
    by_workspace: dict[str, list[Any]] = {}
    for state in replayed.values():
        by_workspace.setdefault(state.workspace_id, []).append(state)
    differences: list[Difference] = []
    compared = matching = 0
    for workspace in sorted(by_workspace):
        client = await obj.connect(workspace)
        try:
            seen: set[UUID] = set()
            async for view in _all_views(client):
                if replay.approval_id is not None and view.id != replay.approval_id:
                    continue
                seen.add(view.id)
                mine = replayed.get(view.id)
                if mine is None:
                    differences.append(
                        Difference(
                            approval_id=view.id,
                            workspace_id=workspace,
                            field="extra",
                            replayed=None,
                            read_model=view.status,
                        )
                    )
                    continue
                compared += 1
                found = [
                    Difference(
                        approval_id=view.id,
                        workspace_id=workspace,
                        field=name,
                        replayed=ours,
                        read_model=theirs,
                    )
                    for name, ours, theirs in (
                        ("status", mine.status, view.status),
                        ("version", mine.version, view.version),
                        ("votes", list(mine.votes), list(view.votes)),
                        ("credits_used", mine.credits_used, view.credits_used),
                    )
                    if ours != theirs
                ]
                differences.extend(found)
                matching += not found
            for state in by_workspace[workspace]:
                if state.id not in seen:
                    differences.append(
                        Difference(
                            approval_id=state.id,
                            workspace_id=workspace,
                            field="missing",
                            replayed=state.status,
                            read_model=None,
                        )
                    )
        finally:
            await client.close()
    return Comparison(compared=compared, matching=matching, differences=differences)


async def _all_views(client: ApprovalsClient) -> Any:
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"limit": 500, "order": "oldest"}
        if cursor:
            body["cursor"] = cursor
        try:
            data = await client.query("list", body)
        except (nats.errors.Error, TimeoutError) as error:
            raise Refused("unavailable", f"the read model does not answer ({error!r})") from None
        try:
            page = msgspec.json.decode(data, type=ListReply)
        except msgspec.ValidationError:
            raise Refused(
                "unavailable", f"the read model refused the list: {data.decode()[:300]}"
            ) from None
        for item in page.items:
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def _replay_text(result: Replayed) -> str:
    bound = (
        f"up to position {result.up_to_position}"
        if result.up_to_position is not None
        else f"at {result.at.isoformat()}"
        if result.at
        else "to the end"
    )
    lines = [
        f"replayed {result.events:,} events from the {result.source} {bound} "
        f"(last position read: {result.position})",
        "",
    ]
    rows = [("workspace", "approvals by status", "budgets (period: committed of cap, held)")]
    for ws in result.workspaces:
        statuses = ", ".join(f"{s} {n}" for s, n in ws.approvals.items()) or "-"
        budgets = (
            "; ".join(
                f"{b.period}: {b.committed:g} of {b.cap:g}, {b.held} held" for b in ws.budgets[-3:]
            )
            or "-"
        )
        if len(ws.budgets) > 3:
            budgets = f"({len(ws.budgets)} periods, latest) " + budgets
        rows.append((ws.workspace_id, statuses, budgets))
    lines += _columns(rows)
    for state in result.approvals:
        lines += [
            "",
            console.table(
                [
                    ("approval", state.id),
                    ("workspace", state.workspace_id),
                    ("title", state.title),
                    ("status", state.status),
                    ("version", state.version),
                    ("approvals", console.progress(state.votes, state.quorum)),
                    ("decided by", state.decided_by),
                    ("digest", state.digest),
                    ("credit ceiling", state.max_credits),
                    ("redeemed at", state.redeemed_at),
                    ("credits used", state.credits_used),
                ]
            ),
        ]
    if result.comparison is not None:
        c = result.comparison
        lines += [
            "",
            f"read model: {c.matching} of {c.compared} approvals match, "
            f"{len(c.differences)} differences",
        ]
        lines += [
            f"  {d.approval_id} ({d.workspace_id}) {d.field}: replayed {d.replayed!r}, "
            f"read model {d.read_model!r}"
            for d in c.differences[:50]
        ]
    return "\n".join(lines)


# -- export and report -------------------------------------------------------------------


@audit.command("export")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: every event).")
@click.option("--since", help="Events at or after this time (ISO 8601).")
@click.option("--until", help="Events before this time (ISO 8601).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here (default: stdout).",
)
@click.pass_obj
def export_command(
    obj: Context, workspace: str | None, since: str | None, until: str | None, output: Path | None
) -> None:
    """JSON Lines of the events, each with its position: for a data warehouse, or `verify`."""

    def work() -> int:
        start, end = _when(since, "--since"), _when(until, "--until")
        with _store() as app:
            total = app.last_notification_id()
            sink: IO[bytes] = output.open("wb") if output else sys.stdout.buffer
            try:
                written = exporting.export(
                    _progress("exporting", total, store_sections(app)),
                    sink,
                    workspace=workspace,
                    since=start,
                    until=end,
                )
            finally:
                if output:
                    sink.close()
                else:
                    sink.flush()
        click.echo(f"exported {written:,} events" + (f" to {output}" if output else ""), err=True)
        return 0

    _run(obj, work)


@audit.command("report")
@click.option("--workspace", type=WORKSPACE, help="One workspace (default: each workspace).")
@click.option(
    "--period",
    type=click.Choice(["day", "week", "month"]),
    default="month",
    show_default=True,
    help="The length of each row of the report.",
)
@click.option("--since", help="From this time (ISO 8601).")
@click.option("--until", help="Before this time (ISO 8601).")
@click.option(
    "--chart",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also draw the decisions over time: a .png or .svg file.",
)
@click.pass_obj
def report_command(
    obj: Context,
    workspace: str | None,
    period: Literal["day", "week", "month"],
    since: str | None,
    until: str | None,
    chart: Path | None,
) -> None:
    """Requests, decisions, time to decision, credits approved and used, top requesters."""

    def work() -> int:
        if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
            raise Refused("invalid", "--chart must name a .png or .svg file")
        summary = reporting.Summary(
            period,
            workspace=workspace,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
        )
        with _store() as app, bulk():
            total = app.last_notification_id()
            for section in _progress("reading", total, store_sections(app)):
                summary.feed(section)
        result = summary.report()
        if chart is not None:
            reporting.chart(result, chart)
            click.echo(f"chart written to {chart}", err=True)
        _emit(obj, result, _report_text(result))
        return 0

    _run(obj, work)


def _report_text(result: Report) -> str:
    header = (
        "workspace",
        result.period,
        "requests",
        "approved",
        "rejected",
        "expired",
        "cancelled",
        "pending",
        "median to decide",
        "credits approved",
        "credits used",
        "top requesters",
    )
    rows = [header] + [
        (
            r.workspace_id,
            r.period,
            str(r.requests),
            str(r.approved),
            str(r.rejected),
            str(r.expired),
            str(r.cancelled),
            str(r.pending),
            "-" if r.median_decision_s is None else _duration(r.median_decision_s),
            f"{r.credits_approved:g}",
            f"{r.credits_used:g}",
            ", ".join(f"{who} ({n})" for who, n in r.top_requesters),
        )
        for r in result.rows
    ]
    return "\n".join(_columns(rows)) if result.rows else "no events in that range"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- tamper evidence ---------------------------------------------------------------------


@audit.command("verify")
@click.option(
    "--export",
    "export_file",
    type=click.Path(exists=True, path_type=Path, dir_okay=False),
    help="Verify this export (`audit export`) instead of the store.",
)
@click.option(
    "--checkpoints",
    "checkpoints_file",
    type=click.Path(exists=True, path_type=Path, dir_okay=False),
    help="Checkpoints saved by `audit checkpoints` (default: from the stream).",
)
@click.option("--no-checkpoints", is_flag=True, help="Check the hash chains only.")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="The signing public key (as `approvals keys` prints it): no bus needed.",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, path_type=Path),
    help="The output of `approvals keys --json`.",
)
@click.pass_obj
def verify_command(
    obj: Context,
    export_file: Path | None,
    checkpoints_file: Path | None,
    no_checkpoints: bool,
    public_keys: tuple[str, ...],
    keys_file: Path | None,
) -> None:
    """Recompute every event's hash chain and the log hash, and check them against the signed
    checkpoints; name the first event that does not match. Exits 1 when something does not."""

    def work() -> int:
        checkpoints: list[Checkpoint] = []
        refused: list[tuple[Checkpoint, str]] = []
        if not no_checkpoints:
            try:
                keys = _offline_keys(public_keys, keys_file)
            except ValueError as error:
                raise Refused("invalid", str(error)) from None
            checkpoints, keys = asyncio.run(_checkpoints_and_keys(obj, checkpoints_file, keys))
            checkpoints, refused = check_checkpoints(checkpoints, keys)
        verifier = Verifier(checkpoints)
        with bulk():
            if export_file is not None:
                with export_file.open("rb") as lines:
                    try:
                        for rows in export_sections(lines):
                            verifier.feed(rows)
                    except ValueError as error:
                        raise Refused("invalid", f"{export_file}: {error}") from None
            else:
                with _store() as app:
                    total = app.last_notification_id()
                    for section in _progress("verifying", total, store_sections(app)):
                        verifier.feed(section)
        result = verifier.finish("export" if export_file else "store")
        if refused:
            from approvals.schemas.audit import Problem

            first_bad = Problem(
                code="checkpoint_invalid",
                position=refused[0][0].position,
                message=f"a checkpoint's signature does not hold: {refused[0][1]}",
            )
            first = result.first_problem
            result = msgspec.structs.replace(
                result,
                ok=False,
                problems=result.problems + len(refused),
                first_problem=first
                if first and first.position <= first_bad.position
                else first_bad,
            )
        _emit(obj, result, _verify_text(result, no_checkpoints))
        return 0 if result.ok else 1

    _run(obj, work)


async def _checkpoints_and_keys(
    obj: Context, checkpoints_file: Path | None, keys: Any
) -> tuple[list[Checkpoint], Any]:

    found: list[Checkpoint] = []
    if checkpoints_file is not None:
        text = await asyncio.to_thread(checkpoints_file.read_bytes)
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    found.append(checkpoint_decoder.decode(line))
                except msgspec.DecodeError as error:
                    raise Refused("invalid", f"{checkpoints_file} line {number}: {error}") from None
        if keys is not None:
            return found, keys
    try:
        client = await obj.connect()
    except (OSError, TimeoutError, nats.errors.Error) as error:
        raise Refused(
            "unavailable",
            f"cannot reach {obj.nats_url} for the checkpoints and keys "
            f"({error!r}): pass --checkpoints and --public-key, or --no-checkpoints",
        ) from None
    try:
        if checkpoints_file is None:
            found = await all_checkpoints(client.nc)
        return found, keys if keys is not None else list(await client.keys())
    except (nats.errors.Error, TimeoutError) as error:
        raise Refused(
            "unavailable",
            f"the command service did not give its public keys ({error!r}): "
            "pass --public-key or --keys",
        ) from None
    finally:
        await client.close()


def _verify_text(result: Verification, no_checkpoints: bool) -> str:
    lines = [
        f"{'OK' if result.ok else 'FAILED'}: {result.events:,} events of {result.aggregates:,} "
        f"aggregates up to position {result.position} read from the {result.source}",
        f"log hash {result.log_hash}",
        f"{result.unsealed:,} version 1 events carry no hash (stored before the chain); "
        "their links are computed and checked through the events after them"
        if result.unsealed
        else "every event carries its hash",
        "checkpoints not checked (--no-checkpoints)"
        if no_checkpoints
        else f"{result.checkpoints} signed checkpoints checked; the last matching at position "
        f"{result.last_checkpoint}"
        if result.last_checkpoint is not None
        else f"{result.checkpoints} signed checkpoints checked, none matching",
    ]
    problem = result.first_problem
    if problem is not None:
        where = (
            f" ({problem.type} v{problem.version} of {problem.aggregate_id})"
            if problem.aggregate_id
            else ""
        )
        lines += [
            "",
            f"first problem [{problem.code}] at position {problem.position}{where}:",
            f"  {problem.message}",
            f"{result.problems} problems in all",
        ]
    return "\n".join(lines)


@audit.command("checkpoints")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write them here as JSON Lines (default: stdout).",
)
@click.pass_obj
def checkpoints_command(obj: Context, output: Path | None) -> None:
    """The signed checkpoints published on approvals.audit.checkpoints, oldest first: keep them
    with an export to verify it offline."""

    async def work(client: ApprovalsClient) -> int:
        found = await all_checkpoints(client.nc)
        data = b"".join(encoder.encode(c) + b"\n" for c in found)
        if output is not None:
            await asyncio.to_thread(output.write_bytes, data)
            click.echo(f"{len(found)} checkpoints written to {output}", err=True)
        elif obj.as_json:
            sys.stdout.buffer.write(data)
        else:
            rows = [("position", "events", "signed at", "key", "log hash")] + [
                (str(c.position), str(c.events), c.at.isoformat(), c.key_id, c.log_hash)
                for c in found
            ]
            click.echo("\n".join(_columns(rows)) if found else "no checkpoints yet")
        return 0

    obj.run(work)
