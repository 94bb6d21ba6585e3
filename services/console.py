"""What the CLI prints: JSON for machines, aligned tables for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import msgspec

from schemas.codec import encoder
from services.approvals.views import approval_state
from services.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from schemas.events import Event
    from schemas.replies import AnyReply, ApprovalState
    from services.approvals.domain import Approval


def table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {'' if value is None else value}" for key, value in rows)


def fail(as_json: bool, code: str, message: str) -> None:
    if as_json:
        click.echo(encoder.encode({"ok": False, "error": {"code": code, "message": message}}))
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
    if reply.approval is not None:
        rows.extend(_approval_rows(reply.approval))
    click.echo(table(rows))


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
        ("delivered to", ", ".join(f"{d.channel}:{d.target}" for d in state.deliveries)),
        ("version", state.version),
        ("web", state.web_url),
    ]


def print_approval(as_json: bool, approval: Approval, history: Sequence[Event]) -> None:
    state = approval_state(approval, Settings.from_env().web_url)
    if as_json:
        document = {"ok": True, "approval": state, "events": list(history)}
        click.echo(encoder.encode(document))
        return
    click.echo(table(_approval_rows(state)))
    click.echo("")
    click.echo(
        table(
            [
                (f"v{e.version} {e.event_type}", f"{e.occurred_at.isoformat()}  {_event_line(e)}")
                for e in history
            ]
        )
    )


def print_event(as_json: bool, sequence: int, event: Event) -> None:
    if as_json:
        click.echo(encoder.encode({"seq": sequence, "event": event}))
        return
    click.echo(
        f"{sequence:>8}  {event.occurred_at.isoformat()}  {event.event_type:<10} "
        f"{event.approval_id} v{event.version}  {_event_line(event)}"
    )


def _event_line(event: Event) -> str:
    fields = msgspec.structs.asdict(event)
    shown = {k: fields[k] for k in ("reason", "channel", "target", "title") if fields.get(k)}
    extra = " ".join(f"{k}={v}" for k, v in shown.items())
    return f"{event.actor} {extra}".rstrip()
