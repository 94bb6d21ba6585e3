"""What the audit commands print for a person (``--json`` prints the documents themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from approvals.services.cli import console

if TYPE_CHECKING:
    from collections.abc import Sequence

    from approvals.schemas.audit import Checkpoint, History, Replayed, Report, Verification


def history_text(found: History) -> str:
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
    return "\n".join(lines + columns(rows))


def checkpoints_text(found: Sequence[Checkpoint]) -> str:
    rows = [("position", "events", "signed at", "key", "log hash")] + [
        (str(c.position), str(c.events), c.at.isoformat(), c.key_id, c.log_hash) for c in found
    ]
    return "\n".join(columns(rows)) if found else "no checkpoints yet"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def replay_text(result: Replayed) -> str:
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
    lines += columns(rows)
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


def report_text(result: Report) -> str:
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
            "-" if r.median_decision_s is None else duration(r.median_decision_s),
            f"{r.credits_approved:g}",
            f"{r.credits_used:g}",
            ", ".join(f"{who} ({n})" for who, n in r.top_requesters),
        )
        for r in result.rows
    ]
    return "\n".join(columns(rows)) if result.rows else "no events in that range"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def verify_text(result: Verification, no_checkpoints: bool) -> str:
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
    if result.passkeys:
        lines.append(f"{result.passkeys:,} passkey-signed decisions checked against the "
                     "credentials registered before them")  # fmt: skip
    problem = result.first_problem
    if problem is not None:
        where = (
            f" ({problem.type} v{problem.version} of {problem.aggregate_id})"
            if problem.aggregate_id
            else ""
        )
        lines += [
            "",
            f"first problem [{problem.code}{': ' + problem.reason if problem.reason else ''}] "
            f"at position {problem.position}{where}:",
            f"  {problem.message}",
            f"{result.problems} problems in all",
        ]
    return "\n".join(lines)
