"""What the CLI prints: JSON for machines, aligned tables for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import msgspec

from approvals.schemas.codec import encode_error, encoder
from approvals.services.cli.review_fields import block, requested_event, review_rows, what_to_review

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from approvals.schemas.events import Event, WorkspaceEvent
    from approvals.schemas.queries import ApprovalView, ListReply, TimelineEntry, WaitReply
    from approvals.schemas.replies import AnyReply, ApprovalState, BudgetState, WorkspaceReply
    from approvals.schemas.workspace import Change


def table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {'' if value is None else value}" for key, value in rows)


def fail(as_json: bool, code: str, message: str, raw: bytes | None = None) -> None:
    """Print an error: the reply as it came (``raw``) or the one error shape."""
    if as_json:
        click.echo(raw.decode() if raw else encode_error(code, message).decode())
    else:
        click.echo(f"error [{code}]: {message}", err=True)


def print_reply(reply: AnyReply) -> None:
    if not reply.ok:
        assert reply.error is not None
        click.echo(f"error [{reply.error.code}]: {reply.error.message}", err=True)
        for key, value in reply.error.details.items():
            click.echo(f"  {key}: {value}", err=True)
        return
    rows: list[tuple[str, Any]] = [("outcome", reply.outcome)]
    if reply.replayed:
        rows.append(("replayed", "yes: an earlier request with this idempotency key"))
    if reply.policy is not None:
        policy = reply.policy
        rows.append(("policy", f"{policy.row}: {policy.reason}"))
        if policy.standing_rule:
            rows.append(("standing rule", policy.standing_rule))
    if reply.approval is not None:
        rows.extend(_approval_rows(reply.approval))
    if reply.settings_version is not None:
        rows.append(("settings version", reply.settings_version))
    click.echo(table(rows))
    if reply.changes is not None:
        click.echo("")
        click.echo(_changes(reply.changes) if reply.changes else "no change: already in force")


def _changes(changes: Sequence[Change]) -> str:
    return table([(c.path, f"{_short(c.before)} -> {_short(c.after)}") for c in changes])


def _short(value: Any) -> str:
    if value is None:
        return "(none)"
    text = encoder.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def print_workspace(as_json: bool, reply: WorkspaceReply) -> None:
    if as_json:
        click.echo(encoder.encode(reply))
        return
    ws = reply.workspace
    settings = ws.settings
    rows: list[tuple[str, Any]] = [
        ("workspace", ws.workspace_id),
        ("version", ws.version),
        ("configured", f"{ws.configured_at.isoformat()} by {ws.configured_by}"),
        ("default expiry", f"{settings.default_expiry_s} s" if settings.default_expiry_s else
         "service default"),
        ("quorum", _by_risk(settings.quorum) or "1 everywhere"),
        ("approvers", _by_risk({k: ",".join(v) for k, v in settings.approvers.items()})
         or "every approver"),
        ("channels", _by_risk({k: ",".join(v) for k, v in settings.channels.items()})
         or "inbox"),
        ("bar skill owner", "yes" if settings.bar_skill_owner else "no"),
        ("budget", f"{settings.budget.cap} credits per {settings.budget.period}"
         if settings.budget else None),
    ]  # fmt: skip
    click.echo(table(rows))
    click.echo("")
    click.echo(table([(m, ", ".join(e.roles) + _aliases(e.aliases))
                      for m, e in sorted(settings.members.items())]))  # fmt: skip
    if settings.groups:
        click.echo("")
        click.echo(
            table([(f"group {g}", ", ".join(p)) for g, p in sorted(settings.groups.items())])
        )
    if settings.standing:
        click.echo("")
        click.echo(table([
            (f"standing {r.name}", f"{','.join(r.kinds)} up to {r.max_credits_per_run} per run"
             + (f", {r.max_credits_per_day} per day" if r.max_credits_per_day else ""))
            for r in settings.standing
        ]))  # fmt: skip
    if ws.delegations:
        click.echo("")
        click.echo(table([(f"delegation {d.delegator}", f"to {d.delegate} until {d.ends_at}")
                          for d in ws.delegations]))  # fmt: skip


def _by_risk(values: Mapping[Any, Any]) -> str:
    return " ".join(f"{risk}={value}" for risk, value in values.items())


def _aliases(aliases: Sequence[str]) -> str:
    return f"  (also {', '.join(aliases)})" if aliases else ""


def _approval_rows(state: ApprovalState) -> list[tuple[str, Any]]:
    action = state.action
    return [
        ("id", state.id),
        ("workspace", state.workspace_id),
        ("status", state.status),
        ("title", state.title),
        ("summary", state.summary),
        ("risk", state.risk_level),
        ("requested by", state.requested_by),
        ("on behalf of", state.on_behalf_of),
        ("skill", f"{state.skill_name} ({state.skill_execution_id})"),
        ("action", f"{action.kind} {action.mode} {action.provider or ''}".rstrip()),
        ("destination", action.destination),
        ("max credits", action.max_credits),
        ("digest", state.digest),
        ("created", state.created_at.isoformat()),
        ("expires", state.expires_at.isoformat()),
        ("resolved", state.resolved_at.isoformat() if state.resolved_at else None),
        ("decided by", state.decided_by),
        ("reason", state.reason),
        ("approvals", progress(state.votes, state.quorum)),
        ("delivered to", ", ".join(f"{d.channel}:{d.target}" for d in state.deliveries)),
        ("version", state.version),
        ("web", state.web_url),
    ]


def progress(votes: Sequence[str], quorum: int) -> str:
    """Quorum progress as a reviewer reads it: ``1 of 2 (user:ana)``."""
    named = f" ({', '.join(votes)})" if votes else ""
    return f"{len(votes)} of {quorum}{named}"


def print_event(as_json: bool, sequence: int, event: Event | WorkspaceEvent) -> None:
    if as_json:
        click.echo(encoder.encode({"seq": sequence, "event": event}))
        return
    click.echo(
        f"{sequence:>8}  {event.occurred_at.isoformat()}  {event.event_type:<10} "
        f"{event.originator_id} v{event.version}  {_event_line(event)}"
    )


def _event_line(event: Event | WorkspaceEvent) -> str:
    fields = msgspec.structs.asdict(event)
    keys = ("reason", "channel", "target", "title", "voter", "delegate", "rule", "credits")
    shown = {k: fields[k] for k in keys if fields.get(k)}
    extra = " ".join(f"{k}={v}" for k, v in shown.items())
    return f"{event.actor} {extra}".rstrip()


def _view_rows(view: ApprovalView) -> list[tuple[str, Any]]:
    return [
        ("id", view.id),
        ("workspace", view.workspace_id),
        ("status", view.status),
        ("title", view.title),
        ("summary", view.summary),
        ("risk", view.risk_level),
        ("requested by", view.requested_by),
        ("on behalf of", view.on_behalf_of),
        ("skill", f"{view.skill_name} ({view.skill_execution_id})"),
        ("created", view.created_at.isoformat()),
        ("expires", view.expires_at.isoformat()),
        ("resolved", view.resolved_at.isoformat() if view.resolved_at else None),
        ("decided by", view.decided_by),
        ("reason", view.reason),
        ("approvals", progress(view.votes, view.quorum)),
        ("redeem by", view.redeem_by.isoformat() if view.redeem_by else None),
        ("redeemed", view.redeemed_at.isoformat() if view.redeemed_at else None),
        (
            "credits used",
            None
            if view.credits_used is None
            else f"{view.credits_used:g} of {view.max_credits:g}"
            if view.max_credits is not None
            else f"{view.credits_used:g}",
        ),
        ("delivered to", ", ".join(view.channels)),
        ("receipt", f"signed, key {view.receipt.key_id}" if view.receipt else None),
        (
            "passkeys",
            ", ".join(s.member for s in view.receipt.passkeys)
            if view.receipt and view.receipt.passkeys
            else None,
        ),
        ("version", view.version),
        ("web", view.web_url),
    ]


def print_view(
    as_json: bool,
    view: ApprovalView,
    timeline: Sequence[TimelineEntry],
    budget_now: BudgetState | None = None,
) -> None:
    """One approval: its state, what to review (as the web detail page shows it), its timeline.

    The view's ``spend`` is the budget picture taken when the request came in; ``budget_now``
    is the workspace's budget as it is now, so neither is mistaken for the other."""
    what = what_to_review(requested_event(timeline))
    if as_json:
        click.echo(encoder.encode({"ok": True, "approval": view, "what_to_review": what,
                                   "budget_now": budget_now, "timeline": timeline}))  # fmt: skip
        return
    click.echo(table(_view_rows(view)))
    click.echo("")
    click.echo(block("what to review", review_rows(what, view.digest, view.spend, budget_now)))
    click.echo("")
    click.echo(
        table(
            [
                (f"v{e.version} {e.type}", f"{e.occurred_at.isoformat()}  {e.actor}")
                for e in timeline
            ]
        )
    )


def print_page(as_json: bool, page: ListReply) -> None:
    if as_json:
        click.echo(encoder.encode(page))
        return
    header = ("CREATED", "STATUS", "RISK", "ID", "TITLE")
    rows = [
        (v.created_at.strftime("%Y-%m-%d %H:%M:%S"), v.status, v.risk_level, str(v.id), v.title)
        for v in page.items
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def print_wait(as_json: bool, reply: WaitReply) -> None:
    if as_json:
        click.echo(encoder.encode(reply))
        return
    view = reply.approval
    state = "still pending (timed out)" if reply.timed_out else view.status
    click.echo(f"{view.id}  {state}  {view.decided_by or ''}  {view.reason or ''}".rstrip())
